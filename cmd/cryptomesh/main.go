// Command cryptomesh is the one binary of CryptoMesh: the control plane
// and the tools around it, as subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// exit codes scripts can rely on.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError marks errors in how a command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func commands() map[string]command {
	return map[string]command{
		"server":    {summary: "run the control plane (REST API, registry)", run: runServer},
		"apply":     {summary: "apply a mesh document (-f FILE) to the control plane", run: runApply},
		"get":       {summary: "show entities: get KIND [ID] [-o table|json|yaml]", run: runGet},
		"delete":    {summary: "delete an entity: delete KIND ID [--cascade]", run: runDelete},
		"export":    {summary: "print the registry as a mesh document", run: runExport},
		"ca":        {summary: "create a CA directory for the control plane's replicas: ca init --out DIR", run: runCA},
		"token":     {summary: "join tokens of nodes: token create|list|revoke", run: runToken},
		"agent":     {summary: "keep a node's SVID, key, bundle and token files fresh", run: runAgent},
		"bootstrap": {summary: "print a node's xDS bootstrap: bootstrap grpc|envoy --node N", run: runBootstrap},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "cryptomesh: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return exitUsage
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	var coded codedError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "cryptomesh %s: %v\n", args[0], err)
		return exitUsage
	case errors.As(err, &coded):
		fmt.Fprintf(stderr, "cryptomesh %s: %v\n", args[0], err)
		return coded.code
	default:
		fmt.Fprintf(stderr, "cryptomesh %s: %v\n", args[0], err)
		return exitError
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "Usage: cryptomesh COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'cryptomesh COMMAND --help' for a command's flags.")
	fmt.Fprint(w, `
The client commands (apply, get, delete, export, token) reach the control
plane at --server (CRYPTOMESH_SERVER, default http://127.0.0.1:19000) with the
admin token in --token-file (CRYPTOMESH_TOKEN_FILE, default
<data-dir>/admin-token, --data-dir defaulting to ./data as for the server). An
https server is trusted by --ca-file (its bundle, or its CA directory), by
default <data-dir>/ca when it exists.

Exit codes:
  0  success
  1  error: the server failed or cannot be reached, the token was refused
  2  usage: unknown command, flag or kind, missing arguments, unreadable -f FILE
  3  not found: no such entity
  4  conflict: still referenced (delete --cascade may help), or a clash with stored state
  5  invalid input: the server refused the document or value (its errors name each field)
`)
}
