package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/models"
)

func newPresetsCmd() *cobra.Command {
	var cf clientFlags
	list := func(cmd *cobra.Command, _ []string) error {
		presets, err := cf.client().Presets(cmd.Context())
		if err != nil {
			return err
		}
		tw := newTable(cmd.OutOrStdout())
		tw.row("PRESET", "VERSION", "BASE MODEL", "DESCRIPTION")
		for _, p := range presets {
			tw.row(p.Name, fmt.Sprint(p.Version), p.Model, p.Description)
		}
		tw.flush()
		return nil
	}
	cmd := &cobra.Command{
		Use:   "presets",
		Short: "List and manage presets (offline custom GPTs: base model + system prompt + parameters)",
		Args:  cobra.NoArgs,
		RunE:  list,
	}
	cf.bind(cmd.PersistentFlags())
	cmd.AddCommand(&cobra.Command{Use: "list", Short: "List presets", Args: cobra.NoArgs, RunE: list})
	cmd.AddCommand(&cobra.Command{
		Use:   "get NAME",
		Short: "Print one preset as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printRaw(cmd.Context(), cf.client(), "/admin/v1/presets/"+url.PathEscape(args[0]), cmd.OutOrStdout())
		},
	})
	var file string
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update the presets of a YAML file (presets: [...])",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("apply needs -f FILE")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			presets, err := models.ParsePresets(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			c := cf.client()
			for _, p := range presets {
				// The gateway numbers a preset without version: and keeps an unchanged one as it is.
				stored, err := c.PutPreset(cmd.Context(), p)
				if err != nil {
					return fmt.Errorf("preset %s: %w", p.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "preset %s version %d (base model %s)\n", p.Name, stored.Version, stored.Model)
			}
			return nil
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "YAML file of presets")
	cmd.AddCommand(apply)
	cmd.AddCommand(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a preset",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.client().DeletePreset(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "preset %s deleted\n", strings.TrimSpace(args[0]))
			return nil
		},
	})
	return cmd
}
