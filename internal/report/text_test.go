package report

import (
	"math"
	"strconv"
	"testing"
)

// appendIntUnitsRef is appendIntUnits before its fast path (the reference:
// pflogsumm's "%6d%s" with k and m units).
func appendIntUnitsRef(b []byte, v float64) []byte {
	u := byte(' ')
	switch {
	case v > 536870912:
		v /= 1048576
		u = 'm'
	case v > 524288:
		v /= 1024
		u = 'k'
	}
	d := strconv.AppendInt(nil, int64(v), 10)
	for i := len(d); i < 6; i++ {
		b = append(b, ' ')
	}
	return append(append(b, d...), u)
}

func TestAppendIntUnitsSameAsRef(t *testing.T) {
	vs := []float64{0, 0.4, 0.99, 1, 9, 10, 99, 100, 12345, 99999, 100000, 524287, 524287.5, 524288, 524288.5, 524289,
		1 << 30, 536870912, 536870913, 5e12, -0.5, -1, -12345, -1e7, math.Inf(1), math.NaN()}
	for i := range 200000 {
		vs = append(vs, float64(i), float64(i)+0.5, float64(i)*37.3)
	}
	for _, v := range vs {
		if got, want := string(appendIntUnits([]byte("x"), v)), string(appendIntUnitsRef([]byte("x"), v)); got != want {
			t.Fatalf("appendIntUnits(%v) = %q, want %q", v, got, want)
		}
	}
}

func FuzzAppendIntUnitsSameAsRef(f *testing.F) {
	f.Add(float64(524288))
	f.Fuzz(func(t *testing.T, v float64) {
		if got, want := string(appendIntUnits(nil, v)), string(appendIntUnitsRef(nil, v)); got != want {
			t.Fatalf("appendIntUnits(%v) = %q, want %q", v, got, want)
		}
	})
}
