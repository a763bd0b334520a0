// Command image builds vigil's container image from the static binary, as
// an OCI image-layout tar, without pulling a base image:
//
//	CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags '-s -w' -o vigil .
//	go run ./deploy/image -binary vigil -o vigil.tar -name k8s.local/vigil:dev
//	ctr -n k8s.io images import vigil.tar     # or: skopeo copy oci-archive:vigil.tar docker://REGISTRY/vigil:TAG
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/vigil-agent/vigil/deploy/image/oci"
)

func main() {
	bin := flag.String("binary", "vigil", "the static vigil `binary` (CGO_ENABLED=0)")
	out := flag.String("o", "vigil.tar", "output `file` (OCI image layout tar)")
	name := flag.String("name", "k8s.local/vigil:dev", "image `name` with tag")
	arch := flag.String("arch", "amd64", "image architecture")
	flag.Parse()
	d, err := oci.WriteFile(*out, oci.Image{Name: *name, Arch: *arch, Entrypoint: []string{"/vigil"},
		Files: []oci.File{{Src: *bin, Dest: "/vigil", Mode: 0o755}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s manifest %s\n", *out, *name, d)
}
