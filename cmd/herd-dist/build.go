package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// BuildOptions says which herd binary to build.
type BuildOptions struct {
	Repo    string // repository root
	Arch    string // GOARCH: amd64 or arm64
	Version string // stamped into main.version
	Output  string // path of the binary
}

// crossCC is the C compiler cgo uses per target architecture when it is not the host's. NVML is
// loaded with dlopen at run time, but go-nvml needs cgo for that, so every build is a cgo build and
// an arm64 one needs Debian's cross toolchain (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross).
var crossCC = map[string]string{
	"amd64": "x86_64-linux-gnu-gcc",
	"arm64": "aarch64-linux-gnu-gcc",
}

// HerdBuildTags are the build tags of every herd binary (the Makefile's TAGS): nomsgpack leaves
// gin's MessagePack codec, which herd does not use, out of the binary every gateway and agent maps.
const HerdBuildTags = "nomsgpack"

// Build compiles cmd/herd for linux/o.Arch. The binary is a position-independent executable
// (lintian's hardening checks want PIE and RELRO, which the external linker gives) without
// symbol tables (a packaged binary is stripped). Go's build cache keeps the compiled packages, so
// a second build of the same tree only links.
func Build(ctx context.Context, o BuildOptions) error {
	cc, ok := crossCC[o.Arch]
	if !ok {
		return fmt.Errorf("architecture %q: want amd64 or arm64", o.Arch)
	}
	env := append(os.Environ(), "GOOS=linux", "GOARCH="+o.Arch, "CGO_ENABLED=1",
		// go-nvml's headers use deprecated declarations; the warnings are noise on every build.
		"CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if o.Arch != runtime.GOARCH || runtime.GOOS != "linux" {
		if _, err := exec.LookPath(cc); err != nil {
			return fmt.Errorf("building for %s needs the C cross compiler %s (Debian: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross): %w", o.Arch, cc, err)
		}
		env = append(env, "CC="+cc)
	}
	args := []string{"build", "-trimpath", "-buildmode=pie", "-tags", HerdBuildTags,
		// RELRO, but not -z now (lintian's hardening-no-bindnow is only informational): go-nvml
		// leaves NVML's symbols undefined and resolves them lazily once it has dlopened
		// libnvidia-ml, so binding every symbol at start fails ("undefined symbol: nvml...").
		"-ldflags", "-s -w -X main.version=" + o.Version + " -extldflags '-Wl,-z,relro'", "-o", o.Output}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/herd")...)
	cmd.Dir = o.Repo
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for linux/%s: %w\n%s", o.Arch, err, out.String())
	}
	return nil
}
