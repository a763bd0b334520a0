package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteLayout(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "vigil")
	content := []byte("#!/not/really\x00static binary bytes")
	if err := os.WriteFile(bin, content, 0o600); err != nil {
		t.Fatal(err)
	}
	img := Image{Name: "k8s.local/vigil:dev", Entrypoint: []string{"/vigil"}, Files: []File{{Src: bin, Dest: "/vigil", Mode: 0o755}}}
	var a, b bytes.Buffer
	d1, err := Write(&a, img)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Write(&b, img)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("not reproducible: %s vs %s", d1, d2)
	}
	files := readTar(t, a.Bytes())
	for name, data := range files {
		if len(name) > len("blobs/sha256/") && name[:len("blobs/sha256/")] == "blobs/sha256/" {
			sum := sha256.Sum256(data)
			if got := hex.EncodeToString(sum[:]); got != name[len("blobs/sha256/"):] {
				t.Errorf("blob %s has digest %s", name, got)
			}
		}
	}
	var idx struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != d1 || idx.Manifests[0].Annotations["io.containerd.image.name"] != img.Name {
		t.Fatalf("index.json = %s", files["index.json"])
	}
	var man struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(files["blobs/sha256/"+d1[len("sha256:"):]], &man); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config struct{ Entrypoint []string } `json:"config"`
	}
	if err := json.Unmarshal(files["blobs/sha256/"+man.Config.Digest[len("sha256:"):]], &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/vigil" {
		t.Errorf("entrypoint = %v", cfg.Config.Entrypoint)
	}
	layer := readTar(t, files["blobs/sha256/"+man.Layers[0].Digest[len("sha256:"):]])
	if !bytes.Equal(layer["vigil"], content) {
		t.Errorf("layer /vigil = %q, want the binary", layer["vigil"])
	}
	if _, err := Write(io.Discard, Image{Name: "no-tag"}); err == nil {
		t.Error("Write accepted a name without tag")
	}
}

func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name] = data
		}
	}
}
