package rooms

// ValidClass reports whether name is a legal class name: [a-z][a-z0-9-]{0,63}.
func ValidClass(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ValidRoom reports whether name is a legal room name: 1–128 of
// [A-Za-z0-9._~-]. These are exactly the URL path characters that need no
// escaping, so a room name is the same in a URL, a Redis key and a log line.
func ValidRoom(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}
