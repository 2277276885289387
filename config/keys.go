package config

import (
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// unknownKeys reports keys the file sets that no field takes, each once at
// its first unknown part: `[merchant.default.wxpay]` with two keys in it is
// one mistake ("merchant"), not three. Each error suggests the nearest
// valid key when one is close enough to be a typo.
func unknownKeys(keys []toml.Key) []error {
	var errs []error
	reported := map[string]bool{}
	for _, k := range keys {
		// The shortest part of the key that names nothing is the mistake.
		for i := 1; i <= len(k); i++ {
			if known(k[:i]) {
				continue
			}
			bad := k[:i]
			if name := bad.String(); !reported[name] {
				reported[name] = true
				msg := "unknown key"
				if s := suggestKey(bad); s != "" {
					msg += "; did you mean " + s + "?"
				}
				errs = append(errs, &Error{Key: name, Msg: msg})
			}
			break
		}
	}
	return errs
}

// known reports whether k is a valid key or table.
func known(k toml.Key) bool {
	for _, pattern := range knownKeys {
		if matches(pattern, k) {
			return true
		}
	}
	return false
}

// matches reports whether k fits pattern, "*" matching any one part.
func matches(pattern string, k toml.Key) bool {
	return matchParts(strings.Split(pattern, "."), k)
}

func matchParts(parts []string, k toml.Key) bool {
	if len(parts) != len(k) {
		return false
	}
	for i, p := range parts {
		if p != "*" && p != k[i] {
			return false
		}
	}
	return true
}

// knownKeys are the dotted keys of Config and of every table in it, with
// "*" for the name of a map entry ([merchants.*], catalog.*).
var knownKeys = keysOf(reflect.TypeFor[Config](), "")

func keysOf(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := prefix + tag
		out = append(out, key)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]():
			out = append(out, keysOf(ft, key+".")...)
		case ft.Kind() == reflect.Map:
			out = append(out, key+".*")
			et := ft.Elem()
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				out = append(out, keysOf(et, key+".*.")...)
			}
		}
	}
	return out
}

// suggestKey returns the valid key nearest to k when it is near enough to
// be a typo, "" otherwise. k's parent is a valid table (unknownKeys
// reports the first unknown part), so the candidates are its siblings:
// near means an edit distance of at most a third of the name (at least 1),
// or the name cut short ("font" for "font_file").
func suggestKey(k toml.Key) string {
	parent, last := k[:len(k)-1], k[len(k)-1]
	best, bestD := "", -1
	for _, pattern := range knownKeys {
		parts := strings.Split(pattern, ".")
		name := parts[len(parts)-1]
		if name == "*" || !matchParts(parts[:len(parts)-1], parent) {
			continue
		}
		d := editDistance(last, name)
		if len(last) >= 3 && strings.HasPrefix(name, last) {
			d = 1
		}
		if bestD < 0 || d < bestD {
			best, bestD = toml.Key(append(slices.Clone(parent), name)).String(), d
		}
	}
	if bestD < 0 || bestD > max(1, len(last)/3) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b,
// in bytes: insertions, deletions, substitutions and swaps of neighbours
// ("ulr" for "url") each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
