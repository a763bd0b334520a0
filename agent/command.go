package agent

import (
	"context"
	"flag"
	"io"
	"sort"
)

// Command is one `vigil <name>` subcommand. Each command lives in its own
// file (cmd_<name>.go) and registers itself from init, so adding one touches
// one file.
type Command struct {
	// Name is the word after `vigil` ("run", "rules", "journal", ...).
	Name string
	// Summary is the one-line description shown by `vigil --help`.
	Summary string
	// Run executes the command. args excludes the command name. It returns
	// the process exit status; only main exits. Flag parsing should use
	// NewFlagSet so that --help and errors behave the same everywhere.
	Run func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = map[string]*Command{}

// registerCommand adds a command; it is called from init functions.
func registerCommand(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("agent: command registered twice: " + c.Name)
	}
	commands[c.Name] = c
}

// Commands returns the registered commands sorted by name.
func Commands() []*Command {
	out := make([]*Command, 0, len(commands))
	for _, c := range commands {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupCommand returns the command with that name, or nil.
func LookupCommand(name string) *Command { return commands[name] }

// NewFlagSet returns a flag set for `vigil <name>` that writes usage and
// errors to stderr and returns errors instead of exiting.
func NewFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vigil "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, "Usage: vigil "+name+" "+usage+"\n")
		fs.PrintDefaults()
	}
	return fs
}
