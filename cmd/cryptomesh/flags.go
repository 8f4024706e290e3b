package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// listFlag is a repeatable flag that also splits on commas, so
// `--api-token-file a --api-token-file b` and
// `CRYPTOMESH_API_TOKEN_FILE=a,b` mean the same.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// envName is the environment variable standing for a flag:
// CRYPTOMESH_ + the flag name upper-cased, dashes as underscores.
func envName(flagName string) string {
	return "CRYPTOMESH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from its CRYPTOMESH_* variable. Flags win over the environment.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// usageWithEnv prints a flag set's defaults with the variable of each flag.
func usageWithEnv(fs *flag.FlagSet, synopsis string) func() {
	return func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: %s\n\nFlags (each also settable as CRYPTOMESH_<FLAG>):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(out, "  --%s%s\n        %s [%s]\n", f.Name, def, f.Usage, envName(f.Name))
		})
	}
}
