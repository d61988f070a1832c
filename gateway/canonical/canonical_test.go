package canonical

import "testing"

func TestJSONIsCanonical(t *testing.T) {
	a, err := JSON([]byte(`{"b": [1.0, "x<y"], "a": {"d": true, "c": null}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := JSON([]byte(`{"a":{"c":null,"d":true},"b":[1,"x<y"]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":{"c":null,"d":true},"b":[1,"x<y"]}`
	if string(a) != want || string(b) != want {
		t.Fatalf("got %s and %s, want %s", a, b, want)
	}
	if _, err := JSON([]byte(`{"a":1} {"b":2}`)); err == nil {
		t.Fatal("trailing data accepted")
	}
}
