package roomgate

import (
	"flag"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestEveryFlagSetsItsField: each serve flag writes exactly one Config
// field, every field but Listener and Logger has its flag, and the flags'
// defaults are DefaultConfig's, so a command line and a Config are one
// code path.
func TestEveryFlagSetsItsField(t *testing.T) {
	probe := map[string]string{ // a value unlike the default, per flag type
		"*flag.stringValue":   "probe",
		"*flag.boolValue":     "true",
		"*flag.intValue":      "7",
		"*flag.int64Value":    "7",
		"*flag.float64Value":  "7.5",
		"*flag.durationValue": "7s",
		"roomgate.list":       "a, b",
	}
	def := DefaultConfig()
	fields := map[string]string{} // field → its flag
	var names []string
	c := def
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.bindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if !reflect.DeepEqual(c, def) {
		t.Fatalf("binding the flags changed the Config: %+v", c)
	}
	for _, name := range names {
		c := def
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		c.bindFlags(fs)
		f := fs.Lookup(name)
		v, ok := probe[reflect.TypeOf(f.Value).String()]
		if !ok {
			t.Fatalf("-%s: no probe for %T", name, f.Value)
		}
		if err := fs.Set(name, v); err != nil {
			t.Fatalf("-%s %s: %v", name, v, err)
		}
		var changed []string
		cv, dv := reflect.ValueOf(c), reflect.ValueOf(def)
		for i := range cv.NumField() {
			if !reflect.DeepEqual(cv.Field(i).Interface(), dv.Field(i).Interface()) {
				changed = append(changed, cv.Type().Field(i).Name)
			}
		}
		if len(changed) != 1 {
			t.Fatalf("-%s changed %v, want one field", name, changed)
		}
		if other, dup := fields[changed[0]]; dup {
			t.Fatalf("-%s and -%s both set %s", name, other, changed[0])
		}
		fields[changed[0]] = name
	}
	for _, field := range reflect.VisibleFields(reflect.TypeFor[Config]()) {
		if _, ok := fields[field.Name]; !ok && field.Name != "Listener" && field.Name != "Logger" {
			t.Errorf("Config.%s has no flag", field.Name)
		}
	}
	// DESIGN §1's serve flags, word for word.
	for _, name := range []string{
		"addr", "data", "redis", "redis-cluster", "node-id", "advertise", "cluster-secret",
		"jwt-secret", "jwt-public-key", "hibernate-after", "lease-ttl", "max-message-bytes",
		"allowed-origins", "jwt-jwks-url", "jwt-issuer", "jwt-audience", "max-conns-per-ip",
		"handshakes-per-ip", "max-pending-handshakes-per-ip", "messages-per-second",
		"max-sockets-per-room", "trusted-proxies", "tls-cert", "tls-key",
	} {
		if !slices.Contains(names, name) {
			t.Errorf("serve has no -%s", name)
		}
	}
}

// TestFlagsOverEnvironmentOverDefaults: a flag beats its ROOMGATE_*
// variable, which beats DefaultConfig; lists split on commas.
func TestFlagsOverEnvironmentOverDefaults(t *testing.T) {
	t.Setenv("ROOMGATE_ALLOWED_ORIGINS", "https://a.example, https://b.example")
	t.Setenv("ROOMGATE_HIBERNATE_AFTER", "1m")
	t.Setenv("ROOMGATE_ADDR", "127.0.0.1:1")
	c := DefaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.bindFlags(fs)
	if err := parseFlags(fs, []string{"-addr", "127.0.0.1:2", "-trusted-proxies", "10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Addr = "127.0.0.1:2"
	want.AllowedOrigins = []string{"https://a.example", "https://b.example"}
	want.HibernateAfter = time.Minute
	want.TrustedProxies = []string{"10.0.0.0/8"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", c, want)
	}
}
