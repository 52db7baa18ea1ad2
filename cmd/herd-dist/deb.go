package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// PackageOptions says which .deb to make.
type PackageOptions struct {
	Repo    string    // repository root: deploy/systemd and deploy/debian are read from here
	Arch    string    // Debian architecture (amd64, arm64; the same names as GOARCH for these two)
	Version string    // herd's version, turned into a Debian version by DebVersion
	Binary  string    // the herd binary for Arch
	OutDir  string    // where the .deb is written
	Date    time.Time // the changelog entry's date and the files' mtime (zero: now)
	// Compression of the data archive: xz (the default: the smallest package) or gzip (several
	// times faster to build, for tests).
	Compression string
}

// Package paths. The units go to /usr/lib/systemd/system, where systemd reads packaged units on
// a merged-/usr system (every Debian since 12).
const (
	pkgName     = "herd"
	binPath     = "/usr/bin/herd"
	unitDir     = "/usr/lib/systemd/system"
	confDir     = "/etc/herd"
	docDir      = "/usr/share/doc/herd"
	maintainer  = "herd maintainers <herd@herd-llm.invalid>"
	homepage    = "https://github.com/herd-llm/herd"
	description = `one OpenAI-compatible endpoint for a LAN of GPU machines
 herd places every OpenAI- or Ollama-API request on the GPU machine best
 able to serve it, streams the answer back and fails over when a node dies.
 It also runs bulk generation through the OpenAI Files and Batches API.
 .
 This package holds the herd binary (gateway, node agent and operator CLI),
 systemd units for the gateway (herd-gateway.service) and for the agent on
 each GPU machine (herd-agent.service), their environment files in
 /etc/herd, and a herd system user. Neither unit is enabled on install.`
)

// Package writes herd_<debversion>_<arch>.deb into o.OutDir and returns its path.
func Package(o PackageOptions) (string, error) {
	debVer, err := DebVersion(o.Version)
	if err != nil {
		return "", err
	}
	libc, err := LibcDepends(o.Binary)
	if err != nil {
		return "", err
	}
	if o.Compression == "" {
		o.Compression = "xz"
	}
	if o.Date.IsZero() {
		o.Date = time.Now().UTC()
	}
	stage, err := os.MkdirTemp("", "herd-dist-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	changelog := filepath.Join(stage, "changelog.Debian.gz")
	if err := writeChangelog(changelog, debVer, o.Date); err != nil {
		return "", err
	}

	deploy := func(p ...string) string { return filepath.Join(append([]string{o.Repo, "deploy"}, p...)...) }
	mode := func(m os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: m, MTime: o.Date}
	}
	contents := files.Contents{
		{Source: o.Binary, Destination: binPath, FileInfo: mode(0o755)},
		{Source: deploy("systemd", "herd-gateway.service"), Destination: unitDir + "/herd-gateway.service", FileInfo: mode(0o644)},
		{Source: deploy("systemd", "herd-agent.service"), Destination: unitDir + "/herd-agent.service", FileInfo: mode(0o644)},
		// The environment files hold the cluster token and API keys: readable by root only.
		// systemd reads EnvironmentFile= as root before it drops to the herd user.
		{Source: deploy("debian", "gateway.env"), Destination: confDir + "/gateway.env", Type: files.TypeConfig, FileInfo: mode(0o600)},
		{Source: deploy("debian", "agent.env"), Destination: confDir + "/agent.env", Type: files.TypeConfig, FileInfo: mode(0o600)},
		{Source: deploy("debian", "copyright"), Destination: docDir + "/copyright", FileInfo: mode(0o644)},
		{Source: changelog, Destination: docDir + "/changelog.Debian.gz", FileInfo: mode(0o644)},
		{Source: deploy("debian", "lintian-overrides"), Destination: "/usr/share/lintian/overrides/herd", FileInfo: mode(0o644)},
	}
	info := &nfpm.Info{
		Name:          pkgName,
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       debVer[:len(debVer)-len("-1")],
		VersionSchema: "none",
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description:   description,
		Homepage:      homepage,
		MTime:         o.Date,
		Overridables: nfpm.Overridables{
			// adduser: the postinst makes the herd system user with it.
			Depends:  []string{libc, "adduser"},
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: deploy("debian", "postinst"),
				PreRemove:   deploy("debian", "prerm"),
				PostRemove:  deploy("debian", "postrm"),
			},
			Deb: nfpm.Deb{Compression: o.Compression},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("package %s: %w", o.Arch, err)
	}
	path := filepath.Join(o.OutDir, fmt.Sprintf("%s_%s_%s.deb", pkgName, debVer, o.Arch))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("package %s: %w", o.Arch, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, nil
}

// writeChangelog writes the one-entry Debian changelog lintian asks of every package, gzipped
// as dpkg expects (-9, no name or time in the header, so the same input gives the same bytes).
func writeChangelog(path, debVer string, date time.Time) error {
	text := fmt.Sprintf("herd (%s) unstable; urgency=medium\n\n  * Release %s, built by herd-dist from the herd repository.\n\n -- %s  %s\n",
		debVer, debVer, maintainer, date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write([]byte(text)); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
