package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/gateway/api"
)

// newKeysCmd is `herd keys`: the tenants' API keys, through /admin/v1/keys (an admin key needed).
func newKeysCmd() *cobra.Command {
	var cf clientFlags
	list := func(cmd *cobra.Command, _ []string) error {
		keys, err := cf.client().Keys(cmd.Context())
		if err != nil {
			return err
		}
		tw := newTable(cmd.OutOrStdout())
		tw.row("NAME", "ID", "KEY", "SCOPES", "RPM", "TPM", "SOURCE", "CREATED")
		for _, k := range keys {
			created := "-"
			if k.CreatedAt > 0 {
				created = time.Unix(k.CreatedAt, 0).UTC().Format(time.DateTime)
			}
			tw.row(k.Name, k.ID, k.RedactedValue, strings.Join(k.Scopes, ","), limitText(k.RequestsPerMinute), limitText(k.TokensPerMinute), k.Source, created)
		}
		tw.flush()
		return nil
	}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "List and manage API keys (tenants: scopes inference, batch, admin; rate limits)",
		Args:  cobra.NoArgs,
		RunE:  list,
	}
	cf.bind(cmd.PersistentFlags())
	cmd.AddCommand(&cobra.Command{Use: "list", Short: "List API keys (secrets redacted)", Args: cobra.NoArgs, RunE: list})
	var req api.CreateKeyRequest
	create := &cobra.Command{
		Use:   "create NAME --scopes inference,batch [--rpm N] [--tpm N]",
		Short: "Create an API key; its secret is printed this once",
		Long: "Create an API key; its secret is printed this once.\n\n" +
			"On a gateway with no key yet the first key closes it to callers without a key, so it must have the admin scope\n" +
			"(herd keys create ops --scopes admin,inference,batch); the gateway refuses a non-admin first key. Lost every\n" +
			"admin key? Restart the gateway with HERD_ADMIN_KEYS=KEY (or --admin-keys) and use that key.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			k, err := cf.client().CreateKey(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", k.Value)
			fmt.Fprintf(cmd.ErrOrStderr(), "key %s (%s) created with scopes %s; the secret above is not shown again\n", k.Name, k.ID, strings.Join(k.Scopes, ","))
			return nil
		},
	}
	listFlag(create.Flags(), &req.Scopes, "scopes", "scopes: inference, batch, admin")
	create.Flags().IntVar(&req.RequestsPerMinute, "rpm", 0, "requests per minute (0: no limit)")
	create.Flags().IntVar(&req.TokensPerMinute, "tpm", 0, "tokens per minute (0: no limit)")
	cmd.AddCommand(create)
	cmd.AddCommand(&cobra.Command{
		Use:   "delete ID",
		Short: "Delete a key created through the admin API (configured keys are removed from the configuration)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.client().DeleteKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s deleted\n", args[0])
			return nil
		},
	})
	return cmd
}

func limitText(n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
