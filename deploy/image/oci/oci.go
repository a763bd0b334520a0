// Package oci writes single-layer OCI image-layout tarballs from local
// files, without a registry or a base image. containerd imports them with
// `ctr -n k8s.io images import`; the name comes from the
// io.containerd.image.name annotation.
package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"
)

// File is one file of the image.
type File struct {
	// Src is the local path, Dest the absolute path in the image.
	Src, Dest string
	// Mode overrides the source's permission bits when not 0.
	Mode os.FileMode
}

// Image describes the image to write.
type Image struct {
	// Name is the fully qualified name, e.g. k8s.local/vigil:dev.
	Name       string
	Entrypoint []string
	Env        []string
	Files      []File
	// Arch is the GOARCH (default amd64).
	Arch string
}

type desc struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

func digest(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

var epoch = time.Unix(0, 0).UTC()

// Write writes img as an OCI image layout tar to w and returns the
// manifest digest. The output is reproducible: same files, same digest.
func Write(w io.Writer, img Image) (string, error) {
	if img.Name == "" || !strings.Contains(img.Name, ":") {
		return "", fmt.Errorf("oci: image name %q needs a tag", img.Name)
	}
	arch := img.Arch
	if arch == "" {
		arch = "amd64"
	}
	var lb bytes.Buffer
	lw := tar.NewWriter(&lb)
	dirs := map[string]bool{}
	addDir := func(d string, mode int64) error {
		if dirs[d] {
			return nil
		}
		dirs[d] = true
		return lw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch})
	}
	for _, d := range []string{"tmp", "etc", "proc", "sys", "dev", "var", "var/lib", "run"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := addDir(d, mode); err != nil {
			return "", err
		}
	}
	for _, f := range img.Files {
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return "", fmt.Errorf("oci: %w", err)
		}
		st, err := os.Stat(f.Src)
		if err != nil {
			return "", fmt.Errorf("oci: %w", err)
		}
		mode := st.Mode().Perm()
		if f.Mode != 0 {
			mode = f.Mode
		}
		dst := strings.TrimPrefix(path.Clean("/"+f.Dest), "/")
		cur := ""
		for _, q := range strings.Split(path.Dir(dst), "/") {
			if q == "" || q == "." {
				continue
			}
			cur = path.Join(cur, q)
			if err := addDir(cur, 0o755); err != nil {
				return "", err
			}
		}
		if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dst, Mode: int64(mode), Size: int64(len(data)), ModTime: epoch}); err != nil {
			return "", err
		}
		if _, err := lw.Write(data); err != nil {
			return "", err
		}
	}
	if err := lw.Close(); err != nil {
		return "", err
	}
	layer := lb.Bytes()
	layerDigest := digest(layer)
	env := img.Env
	if env == nil {
		env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	}
	cfgB, err := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux", "created": epoch.Format(time.RFC3339),
		"config": map[string]any{"Entrypoint": img.Entrypoint, "Env": env, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return "", err
	}
	manB, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(cfgB), Size: int64(len(cfgB))},
		"layers": []desc{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: int64(len(layer))}},
	})
	if err != nil {
		return "", err
	}
	tag := img.Name[strings.LastIndex(img.Name, ":")+1:]
	idxB, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []desc{{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest(manB), Size: int64(len(manB)),
			Annotations: map[string]string{"io.containerd.image.name": img.Name, "org.opencontainers.image.ref.name": tag},
			Platform:    map[string]string{"architecture": arch, "os": "linux"}}},
	})
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(w)
	add := func(n string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return "", err
		}
	}
	for _, e := range []struct {
		name string
		b    []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"blobs/sha256/" + strings.TrimPrefix(layerDigest, "sha256:"), layer},
		{"blobs/sha256/" + strings.TrimPrefix(digest(cfgB), "sha256:"), cfgB},
		{"blobs/sha256/" + strings.TrimPrefix(digest(manB), "sha256:"), manB},
		{"index.json", idxB},
	} {
		if err := add(e.name, e.b); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return digest(manB), nil
}

// WriteFile writes img to the file at path.
func WriteFile(path string, img Image) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("oci: %w", err)
	}
	d, err := Write(f, img)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("oci: write %s: %w", path, err)
	}
	return d, nil
}
