// Command herd-dist builds herd's release artefacts: the herd binary for linux/amd64 and
// linux/arm64 (cgo on both, for NVML; arm64 with Debian's aarch64-linux-gnu cross compiler) and a
// .deb package per architecture, made with nfpm used as a library.
//
// It is a separate program so that nfpm and what it pulls in (git, PGP, archive writers) never end
// up in the herd binary. `make dist` runs it from the repository root:
//
//	go run ./cmd/herd-dist --out dist --version "$(git describe --tags --always --dirty)"
//
// The package's files come from the repository: the systemd units in deploy/systemd, the
// configuration files, maintainer scripts, copyright and lintian overrides in deploy/debian.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "herd-dist:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("herd-dist", flag.ContinueOnError)
	out := fs.String("out", "dist", "directory the binaries and packages are written to")
	version := fs.String("version", "", "herd's version (git describe output; required)")
	archs := fs.String("arch", "amd64,arm64", "architectures to build, comma-separated (amd64, arm64)")
	repo := fs.String("repo", ".", "the herd repository's root")
	compression := fs.String("compression", "xz", "compression of the packages' data: xz or gzip (faster)")
	noBuild := fs.Bool("no-build", false, "package the binaries already in --out (herd-linux-ARCH) instead of building them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" {
		return errors.New("--version is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, arch := range strings.Split(*archs, ",") {
		arch = strings.TrimSpace(arch)
		bin := filepath.Join(*out, "herd-linux-"+arch)
		if !*noBuild {
			start := time.Now()
			if err := Build(ctx, BuildOptions{Repo: *repo, Arch: arch, Version: *version, Output: bin}); err != nil {
				return err
			}
			log.Info("built", "binary", bin, "took", time.Since(start).Round(time.Millisecond))
		}
		deb, err := Package(PackageOptions{Repo: *repo, Arch: arch, Version: *version, Binary: bin, OutDir: *out, Compression: *compression})
		if err != nil {
			return err
		}
		log.Info("packaged", "deb", deb)
	}
	return nil
}
