package collectors

import (
	"testing"
)

func TestParsePressure(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Pressure
		wantErr bool
	}{
		{
			name: "memory",
			in:   "some avg10=32.92 avg60=8.04 avg300=1.77 total=6260466\nfull avg10=27.22 avg60=6.50 avg300=1.40 total=5450927\n",
			want: Pressure{Present: true,
				Some: PSIRecord{Avg10: 32.92, Avg60: 8.04, Avg300: 1.77, Total: 6260466},
				Full: PSIRecord{Avg10: 27.22, Avg60: 6.50, Avg300: 1.40, Total: 5450927}},
		},
		{
			name: "cpu without full",
			in:   "some avg10=0.00 avg60=0.10 avg300=0.00 total=123\n",
			want: Pressure{Present: true, Some: PSIRecord{Avg60: 0.1, Total: 123}},
		},
		{name: "empty", in: "", wantErr: true},
		{name: "garbage", in: "hello world\n", wantErr: true},
		{name: "missing total", in: "some avg10=1.00 avg60=0.10 avg300=0.00\n", wantErr: true},
		{name: "bad number", in: "some avg10=1.x avg60=0.10 avg300=0.00 total=1\n", wantErr: true},
		{name: "negative", in: "some avg10=-1.00 avg60=0.10 avg300=0.00 total=1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePressure([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParsePressureDoesNotAllocate(t *testing.T) {
	in := []byte("some avg10=32.92 avg60=8.04 avg300=1.77 total=6260466\nfull avg10=27.22 avg60=6.50 avg300=1.40 total=5450927\n")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParsePressure(in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ParsePressure allocates %v times per call, want 0", allocs)
	}
}

func FuzzParsePressure(f *testing.F) {
	f.Add([]byte("some avg10=32.92 avg60=8.04 avg300=1.77 total=6260466\nfull avg10=27.22 avg60=6.50 avg300=1.40 total=5450927\n"))
	f.Add([]byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePressure(b)
		if err == nil && !p.Present {
			t.Fatalf("parsed without error but Present is false")
		}
	})
}
