package agent

import (
	"runtime"
	"runtime/debug"
)

// version is set at build time:
//
//	go build -ldflags "-X github.com/vigil-agent/vigil/agent.version=v1.2.3"
var version string

// BuildInfo says which build of vigil runs.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Time      string `json:"time,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}

// ReadBuildInfo combines the -ldflags version with the module and VCS
// information the Go toolchain embeds.
func ReadBuildInfo() BuildInfo {
	bi := BuildInfo{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if ok {
		if bi.Version == "" && info.Main.Version != "" {
			bi.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				bi.Revision = s.Value
			case "vcs.time":
				bi.Time = s.Value
			case "vcs.modified":
				bi.Modified = s.Value == "true"
			}
		}
	}
	if bi.Version == "" {
		bi.Version = "(devel)"
	}
	return bi
}
