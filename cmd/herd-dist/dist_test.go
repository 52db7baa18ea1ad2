package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The packaging tests build herd for real (the host's architecture and arm64, with Debian's cross
// compiler), package both with Package, and check the packages with Debian's own tools. The
// compiled packages stay in Go's build cache (outside the repository), so a second run only
// links. Tools missing from the machine skip a test unless HERD_REQUIRE_DIST=1 (make test sets
// it; scripts/test-deps.sh installs them).

const repoRoot = "../.."

// need returns the path of tool, skipping (or failing, with HERD_REQUIRE_DIST set) without it.
func need(t *testing.T, tool string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and packages herd (skipped with -short)")
	}
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("HERD_REQUIRE_DIST") != "" {
			t.Fatalf("HERD_REQUIRE_DIST is set but %s is not installed (scripts/test-deps.sh installs it)", tool)
		}
		t.Skipf("no %s (set HERD_REQUIRE_DIST=1 to require it)", tool)
	}
	return p
}

var (
	binsOnce, debsOnce sync.Once
	artefactsDir       string
	artefacts          = map[string]string{} // "bin-amd64", "deb-amd64-v0.1.0", ...
	binsErr, debsErr   error
)

// The versions the tests package: an install, and an upgrade to the next.
const (
	oldVersion = "v0.1.0"
	newVersion = "v0.1.1"
)

// built builds the binaries once per test run and, when a package is asked for, the packages
// once; it returns the one named.
func built(t *testing.T, name string) string {
	t.Helper()
	need(t, "dpkg-deb")
	need(t, crossCC["arm64"])
	binsOnce.Do(func() {
		artefactsDir, binsErr = os.MkdirTemp("", "herd-dist-test-")
		if binsErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		for _, arch := range []string{"amd64", "arm64"} {
			bin := filepath.Join(artefactsDir, "herd-linux-"+arch)
			start := time.Now()
			if binsErr = Build(ctx, BuildOptions{Repo: repoRoot, Arch: arch, Version: newVersion, Output: bin}); binsErr != nil {
				return
			}
			t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
			artefacts["bin-"+arch] = bin
		}
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	if strings.HasPrefix(name, "deb-") {
		debsOnce.Do(func() {
			for _, arch := range []string{"amd64", "arm64"} {
				versions := []string{newVersion}
				if arch == runtime.GOARCH {
					versions = append(versions, oldVersion) // the upgrade test installs both
				}
				for _, v := range versions {
					start := time.Now()
					deb, err := Package(PackageOptions{Repo: repoRoot, Arch: arch, Version: v, Binary: artefacts["bin-"+arch], OutDir: artefactsDir,
						// gzip: xz takes about a minute per package on a loaded 2-core machine.
						Compression: "gzip", Date: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)})
					if err != nil {
						debsErr = err
						return
					}
					t.Logf("packaged %s in %s", deb, time.Since(start).Round(time.Millisecond))
					artefacts["deb-"+arch+"-"+v] = deb
				}
			}
		})
		if debsErr != nil {
			t.Fatal(debsErr)
		}
	}
	p, ok := artefacts[name]
	if !ok {
		t.Fatalf("no artefact %s", name)
	}
	return p
}

func TestMain(m *testing.M) {
	code := m.Run()
	if artefactsDir != "" {
		os.RemoveAll(artefactsDir)
	}
	os.Exit(code)
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestBinaries: both are cgo (dynamically linked against glibc, as NVML's dlopen needs), for the
// right machine, stripped, position-independent.
func TestBinaries(t *testing.T) {
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		f, err := elf.Open(built(t, "bin-"+arch))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if f.Machine != machine || f.Type != elf.ET_DYN {
			t.Errorf("%s: machine %v type %v, want %v ET_DYN (PIE)", arch, f.Machine, f.Type, machine)
		}
		if f.Section(".symtab") != nil || f.Section(".debug_info") != nil {
			t.Errorf("%s: not stripped", arch)
		}
		libs, _ := f.ImportedLibraries()
		if len(libs) == 0 || libs[0] != "libc.so.6" {
			t.Errorf("%s: imported libraries %v, want libc.so.6 (cgo)", arch, libs)
		}
	}
	// It starts: the dynamic loader resolves what it must at start (NVML's symbols are bound
	// lazily, after go-nvml dlopens the library; a -z now link breaks exactly here).
	if out := runTool(t, built(t, "bin-"+runtime.GOARCH), "version"); out != "herd "+newVersion+"\n" {
		t.Errorf("herd version: %q", out)
	}
}

// TestPackageContents reads each package as dpkg would: its control fields, its files with their
// owners and modes, its conffiles and maintainer scripts.
func TestPackageContents(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		deb := built(t, "deb-"+arch+"-"+newVersion)
		fields := map[string]string{}
		for _, f := range []string{"Package", "Version", "Architecture", "Depends", "Maintainer", "Section"} {
			fields[f] = strings.TrimSpace(runTool(t, "dpkg-deb", "-f", deb, f))
		}
		if fields["Package"] != "herd" || fields["Version"] != "0.1.1-1" || fields["Architecture"] != arch {
			t.Errorf("%s: control %v", arch, fields)
		}
		if !strings.HasPrefix(fields["Depends"], "libc6 (>= 2.") || !strings.Contains(fields["Depends"], "adduser") {
			t.Errorf("%s: Depends %q", arch, fields["Depends"])
		}
		listing := map[string]string{} // path → "mode owner"
		for line := range strings.Lines(runTool(t, "dpkg-deb", "-c", deb)) {
			f := strings.Fields(line)
			if len(f) >= 6 {
				listing[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
			}
		}
		want := map[string]string{
			"/usr/bin/herd": "-rwxr-xr-x root/root",
			"/usr/lib/systemd/system/herd-gateway.service": "-rw-r--r-- root/root",
			"/usr/lib/systemd/system/herd-agent.service":   "-rw-r--r-- root/root",
			"/etc/herd/gateway.env":                        "-rw------- root/root",
			"/etc/herd/agent.env":                          "-rw------- root/root",
			"/usr/share/doc/herd/copyright":                "-rw-r--r-- root/root",
			"/usr/share/doc/herd/changelog.Debian.gz":      "-rw-r--r-- root/root",
			"/usr/share/lintian/overrides/herd":            "-rw-r--r-- root/root",
		}
		for p, w := range want {
			if listing[p] != w {
				t.Errorf("%s: %s is %q, want %q", arch, p, listing[p], w)
			}
		}
		for p := range listing {
			if _, ok := want[p]; !ok && !strings.HasSuffix(p, "/") {
				t.Errorf("%s: unexpected file %s", arch, p)
			}
		}
		ctl := t.TempDir()
		runTool(t, "dpkg-deb", "-e", deb, ctl)
		conf, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if string(conf) != "/etc/herd/agent.env\n/etc/herd/gateway.env\n" && string(conf) != "/etc/herd/gateway.env\n/etc/herd/agent.env\n" {
			t.Errorf("%s: conffiles %q", arch, conf)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			st, err := os.Stat(filepath.Join(ctl, s))
			if err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("%s: maintainer script %s: %v %v", arch, s, err, st)
			}
		}
		// The packaged binary is the one for arch.
		root := t.TempDir()
		runTool(t, "dpkg-deb", "-x", deb, root)
		f, err := elf.Open(filepath.Join(root, "usr/bin/herd"))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]; f.Machine != want {
			t.Errorf("%s package holds a %v binary", arch, f.Machine)
		}
		f.Close()
	}
}

// TestLintian: no error and no warning on either package; the overrides it honours are in
// deploy/debian/lintian-overrides, each with its reason.
func TestLintian(t *testing.T) {
	lintian := need(t, "lintian")
	for _, arch := range []string{"amd64", "arm64"} {
		deb := built(t, "deb-"+arch+"-"+newVersion)
		t.Run(arch, func(t *testing.T) {
			t.Parallel() // lintian takes most of a minute per package; the two run side by side
			out, err := exec.Command(lintian, "--fail-on", "error,warning", deb).CombinedOutput()
			t.Logf("lintian %s:\n%s", arch, out)
			if err != nil {
				t.Errorf("lintian %s: %v", arch, err)
			}
			for line := range strings.Lines(string(out)) {
				if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
					t.Errorf("lintian %s: %s", arch, line)
				}
			}
		})
	}
}

// TestUnitsVerify runs systemd-analyze verify on the units as extracted from the package, in a
// root holding the package and the host's targets and slices (the units' default dependencies):
// ExecStart must name the packaged binary, every directive must be known.
func TestUnitsVerify(t *testing.T) {
	analyze := need(t, "systemd-analyze")
	root := t.TempDir()
	runTool(t, "dpkg-deb", "-x", built(t, "deb-"+runtime.GOARCH+"-"+newVersion), root)
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	for _, pattern := range []string{"*.target", "*.slice"} {
		host, _ := filepath.Glob(filepath.Join("/usr/lib/systemd/system", pattern))
		for _, h := range host {
			data, err := os.ReadFile(h)
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(unitDir, filepath.Base(h)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := exec.Command(analyze, "verify", "--root="+root, "herd-gateway.service", "herd-agent.service").CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("herd-")) {
		t.Errorf("systemd-analyze verify --root: %v\n%s", err, out)
	}
	// The check can fail: a unit naming a binary the package does not hold is refused.
	unit := filepath.Join(unitDir, "herd-agent.service")
	data, _ := os.ReadFile(unit)
	os.WriteFile(unit, bytes.ReplaceAll(data, []byte("/usr/bin/herd "), []byte("/usr/bin/herd-missing ")), 0o644)
	if out, err := exec.Command(analyze, "verify", "--root="+root, "herd-agent.service").CombinedOutput(); err == nil {
		t.Errorf("systemd-analyze accepted a unit whose binary is missing:\n%s", out)
	}
}

// throwawayRoot is a mount namespace in which an overlay of this machine's / (lower, read-only)
// with a tmpfs on top is mounted as a root to chroot into. dpkg, adduser and the maintainer
// scripts run there for real; everything they write lands on the tmpfs and goes with the
// namespace. Needs root (mount and chroot), or sudo without a password (as CI has); the host's
// own files are never written.
type throwawayRoot struct {
	t    *testing.T
	pid  int
	root string
	sudo []string // "sudo -n" when the test is not root
}

// command runs args as root: directly, or through sudo.
func (r *throwawayRoot) command(args ...string) *exec.Cmd {
	args = append(append([]string{}, r.sudo...), args...)
	return exec.Command(args[0], args[1:]...)
}

func newThrowawayRoot(t *testing.T) *throwawayRoot {
	t.Helper()
	need(t, "unshare")
	need(t, "nsenter")
	r := &throwawayRoot{t: t}
	if os.Geteuid() != 0 {
		if exec.Command("sudo", "-n", "true").Run() != nil {
			if os.Getenv("HERD_REQUIRE_DIST") != "" {
				t.Fatal("HERD_REQUIRE_DIST is set but the maintainer-script test needs root or sudo without a password (mount namespaces, overlayfs, chroot)")
			}
			t.Skip("the maintainer-script test needs root or sudo without a password (mount namespaces, overlayfs, chroot)")
		}
		r.sudo = []string{"sudo", "-n"}
	}
	dir := t.TempDir()
	script := `set -e
d="$1"
mkdir -p "$d/rw" "$d/root"
mount -t tmpfs tmpfs "$d/rw"
mkdir -p "$d/rw/upper" "$d/rw/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/rw/upper,workdir=$d/rw/work" "$d/root"
mount -t proc proc "$d/root/proc"
mount --rbind /dev "$d/root/dev"
mount -t tmpfs tmpfs "$d/root/run"
mount -t tmpfs tmpfs "$d/root/tmp"
echo "ready $$"
exec sleep 900`
	cmd := r.command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.root = filepath.Join(dir, "root")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	// The shell that holds the namespace says its PID (sudo's child, when through sudo), and
	// execs sleep in place: that process ends, and the namespace and its mounts with it.
	t.Cleanup(func() {
		if perr == nil {
			r.command("kill", "-KILL", strconv.Itoa(pid)).Run()
		}
		cmd.Wait()
	})
	if err != nil || perr != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("throwaway root: %q %v\n%s", line, err, stderr.String())
	}
	r.pid = pid
	return r
}

// copyIn copies a host file into the throwaway root's /tmp.
func (r *throwawayRoot) copyIn(host string) string {
	r.t.Helper()
	out, err := r.command("nsenter", "-t", strconv.Itoa(r.pid), "-m", "cp", host, filepath.Join(r.root, "tmp")).CombinedOutput()
	if err != nil {
		r.t.Fatalf("copy %s in: %v\n%s", host, err, out)
	}
	return "/tmp/" + filepath.Base(host)
}

// sh runs a shell command chrooted into the throwaway root, with no terminal and no stdin.
func (r *throwawayRoot) sh(cmdline string) (string, error) {
	cmd := r.command("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C",
		"nsenter", "-t", strconv.Itoa(r.pid), "-m", "chroot", r.root, "/bin/sh", "-ec", cmdline)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *throwawayRoot) must(cmdline string) string {
	r.t.Helper()
	out, err := r.sh(cmdline)
	if err != nil {
		r.t.Fatalf("%s: %v\n%s", cmdline, err, out)
	}
	return strings.TrimSpace(out)
}

// TestMaintainerScripts installs the package with the real dpkg in a throwaway root, twice, runs
// the postinst once more by hand, upgrades to the next version with a changed conffile and data
// in /var/lib/herd, removes and purges it, and reinstalls. What is exercised for real: dpkg's
// unpacking and conffile handling, adduser, every line of the scripts. What is not: this machine
// runs no systemd, so the scripts' systemctl and deb-systemd-invoke calls (behind the test for
// /run/systemd/system) do nothing in the second half, where that directory is made to exist:
// they run, and their failure is tolerated as on any system without a running systemd.
func TestMaintainerScripts(t *testing.T) {
	oldDeb := built(t, "deb-"+runtime.GOARCH+"-"+oldVersion)
	newDeb := built(t, "deb-"+runtime.GOARCH+"-"+newVersion)
	r := newThrowawayRoot(t)
	oldIn, newIn := r.copyIn(oldDeb), r.copyIn(newDeb)

	if out, err := r.sh("getent passwd herd"); err == nil {
		t.Fatalf("the host already has a herd user (%s): the test would not see the postinst make it", out)
	}
	// Ollama was installed first: the postinst adds herd to its group.
	r.must("addgroup --system --quiet ollama")

	r.must("dpkg -i " + oldIn)
	checkInstalled := func(version string) {
		t.Helper()
		if v := r.must("dpkg-query -W -f '${Version} ${db:Status-Abbrev}' herd"); v != version+" ii" {
			t.Errorf("dpkg-query: %q, want %q", v, version+" ii")
		}
		pw := strings.Split(r.must("getent passwd herd"), ":")
		if len(pw) != 7 || pw[5] != "/var/lib/herd" || !strings.HasSuffix(pw[6], "nologin") {
			t.Errorf("herd user %v: want home /var/lib/herd and no login shell", pw)
		}
		if g := r.must("id -nG herd"); !strings.Contains(" "+g+" ", " ollama ") || !strings.Contains(" "+g+" ", " herd ") {
			t.Errorf("herd's groups %q: want herd and ollama", g)
		}
		if st := r.must("stat -c '%U:%G %a' /var/lib/herd /etc/herd/agent.env /etc/herd/gateway.env"); st != "herd:herd 750\nroot:root 600\nroot:root 600" {
			t.Errorf("owners and modes:\n%s", st)
		}
		if v := r.must("/usr/bin/herd version"); !strings.Contains(v, "herd v0.1.1") {
			// Both packages hold the same binary (stamped v0.1.1): the tests build it once.
			t.Errorf("herd version: %q", v)
		}
	}
	checkInstalled("0.1.0-1")
	uid := r.must("id -u herd")

	// Twice: the same package again (dpkg runs prerm upgrade, then postinst configure with the
	// installed version), and the postinst by hand.
	r.must("dpkg -i " + oldIn)
	r.must("/var/lib/dpkg/info/herd.postinst configure 0.1.0-1")
	checkInstalled("0.1.0-1")
	if n := r.must("grep -c '^herd:' /etc/passwd /etc/group | cut -d: -f2 | paste -sd' '"); n != "1 1" {
		t.Errorf("herd in /etc/passwd and /etc/group: %s times", n)
	}
	if n := r.must("grep '^ollama:' /etc/group"); strings.Count(n, "herd") != 1 {
		t.Errorf("ollama group %q: herd once", n)
	}

	// The operator's settings and the gateway's data survive an upgrade, and from here on the
	// scripts take their systemd branch.
	r.must("echo HERD_TOKEN=kept-across-upgrades >> /etc/herd/agent.env")
	r.must("echo batch-output > /var/lib/herd/keep && chown herd:herd /var/lib/herd/keep")
	r.must("mkdir -p /run/systemd/system")
	r.must("dpkg -i " + newIn)
	checkInstalled("0.1.1-1")
	if got := r.must("grep ^HERD_TOKEN= /etc/herd/agent.env"); got != "HERD_TOKEN=kept-across-upgrades" {
		t.Errorf("agent.env after upgrade: %q", got)
	}
	if got := r.must("cat /var/lib/herd/keep"); got != "batch-output" {
		t.Errorf("data after upgrade: %q", got)
	}
	if got := r.must("id -u herd"); got != uid {
		t.Errorf("herd's uid changed on upgrade: %s → %s", uid, got)
	}

	// Remove keeps the configuration and the data; purge takes both, and keeps the user.
	r.must("dpkg -r herd")
	if out, err := r.sh("test ! -e /usr/bin/herd && test ! -e /usr/lib/systemd/system/herd-agent.service && test -f /etc/herd/agent.env && test -f /var/lib/herd/keep"); err != nil {
		t.Errorf("after remove: binary and units should be gone, config and data kept: %v %s", err, out)
	}
	// What systemd's StateDirectory= made for the agent (its key and certificates) goes too.
	r.must("mkdir -p /var/lib/herd-agent && echo key > /var/lib/herd-agent/node.key")
	r.must("dpkg -P herd")
	if out, err := r.sh("test ! -e /etc/herd && test ! -e /var/lib/herd && test ! -e /var/lib/herd-agent && getent passwd herd >/dev/null"); err != nil {
		t.Errorf("after purge: /etc/herd, /var/lib/herd and /var/lib/herd-agent should be gone, the user kept: %v %s", err, out)
	}
	if out, err := r.sh("dpkg-query -W herd 2>/dev/null | grep -q herd"); err == nil {
		t.Errorf("dpkg still knows herd after purge: %s", out)
	}

	// A reinstall after purge reuses the user.
	r.must("dpkg -i " + newIn)
	checkInstalled("0.1.1-1")
	if got := r.must("id -u herd"); got != uid {
		t.Errorf("reinstall made a new herd user: uid %s → %s", uid, got)
	}
}
