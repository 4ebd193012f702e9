package policy

import (
	"errors"
	"fmt"
	"sort"
)

// selectorParser builds a selector from the value go-toml decoded for its key
// (bool, string, int64, float64, []any, map[string]any, ...) and the
// environment the names it refers to resolve in (never nil).
type selectorParser func(value any, env *Env) (Selector, error)

// plain adapts a parser that needs no environment.
func plain(f func(any) (Selector, error)) selectorParser {
	return func(v any, _ *Env) (Selector, error) { return f(v) }
}

// selectorRegistry maps a TOML key to its parser. Adding a selector means one
// small type, its parser and one line here; the evaluator never changes.
var selectorRegistry = map[string]selectorParser{
	keyValidCertificate:     plain(parseValidCertificate),
	keyCommonName:           plain(parseCommonName),
	keyEveryone:             plain(parseEveryone),
	keyCommonNamePattern:    plain(parseCommonNamePattern),
	keySANDNS:               plain(parseSANDNS),
	keySANURI:               plain(parseSANURI),
	keySANEmail:             plain(parseSANEmail),
	keyOrganization:         plain(parseOrganization),
	keyOrganizationalUnit:   plain(parseOrganizationalUnit),
	keySerial:               plain(parseSerial),
	keyFingerprint:          plain(parseFingerprint),
	keyClientCA:             parseClientCA,
	keyIP:                   plain(parseIP),
	keyList:                 parseList,
	keyServiceToken:         parseServiceToken,
	keyAnyValidServiceToken: parseAnyValidServiceToken,
	keyEmail:                plain(parseEmail),
	keyEmailDomain:          plain(parseEmailDomain),
	keyGroup:                plain(parseGroup),
	keyLoginMethod:          plain(parseLoginMethod),
}

// Env is what selectors that name other parts of the configuration resolve
// against: [[client_cas]] entries, [[lists]] and [[service_tokens]], and the
// application's protocol. The zero Env knows none of them, so client_ca,
// list and service_token selectors are refused with it.
type Env struct {
	// ClientCAs maps a [[client_cas]] name to the SHA-256 fingerprints of
	// its certificates (roots and intermediates).
	ClientCAs map[string][][32]byte
	// Lists maps a [[lists]] name to its kind.
	Lists map[string]ListKind
	// ServiceTokens holds the [[service_tokens]] names.
	ServiceTokens map[string]bool
	// NoHTTP is set for a tcp or mqtt application: it has no HTTP headers,
	// so service-token selectors are refused.
	NoHTTP bool
}

// SelectorError is returned by ParseSelector. Error() carries the package
// prefix; Msg is the same text without it, for callers such as configs that
// put their own location in front (`applications[1].policies[0].include[2]:
// unknown selector "comon_name"`). It unwraps to ErrUnknownSelector or
// ErrSelectorValue.
type SelectorError struct {
	Key string // the TOML key as written
	Msg string // e.g. `unknown selector "comon_name"`
	Err error  // ErrUnknownSelector or ErrSelectorValue
}

// Error returns "policy: " followed by Msg.
func (e *SelectorError) Error() string { return "policy: " + e.Msg }

// Unwrap returns the sentinel error (ErrUnknownSelector or ErrSelectorValue).
func (e *SelectorError) Unwrap() error { return e.Err }

// ParseSelector builds the selector registered under key from its TOML value,
// e.g. ParseSelector("common_name", "sensor-0001"). An unknown key or a value
// of the wrong type or range returns a *SelectorError.
func ParseSelector(key string, value any) (Selector, error) {
	return ParseSelectorIn(nil, key, value)
}

// ParseSelectorIn is ParseSelector with the names a selector refers to
// (client CAs, lists, service tokens) resolved in env; nil is the zero Env.
func ParseSelectorIn(env *Env, key string, value any) (Selector, error) {
	parse, ok := selectorRegistry[key]
	if !ok {
		return nil, &SelectorError{Key: key, Msg: fmt.Sprintf("unknown selector %q", key), Err: ErrUnknownSelector}
	}
	if env == nil {
		env = &Env{}
	}
	s, err := parse(value, env)
	if err != nil {
		return nil, &SelectorError{Key: key, Msg: key + ": " + err.Error(), Err: ErrSelectorValue}
	}
	return s, nil
}

// SelectorKeys returns the registered selector keys, sorted; for error
// messages and documentation.
func SelectorKeys() []string {
	keys := make([]string, 0, len(selectorRegistry))
	for k := range selectorRegistry {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// errMustBeTrue is the value error of the flag selectors: `false` would be a
// rule that matches nothing (or everything) in a surprising way; omit it.
var errMustBeTrue = errors.New("must be true (remove the rule instead of setting false)")

// parseTrue accepts exactly the boolean true.
func parseTrue(value any) error {
	b, ok := value.(bool)
	if !ok {
		return fmt.Errorf("want true, got %s", typeName(value))
	}
	if !b {
		return errMustBeTrue
	}
	return nil
}

// parseString accepts a non-empty string.
func parseString(value any) (string, error) {
	s, ok := value.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %s", typeName(value))
	}
	if s == "" {
		return "", errors.New("must not be empty")
	}
	return s, nil
}

// typeName names a decoded TOML value's type for error messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case int64, int, int32, uint64:
		return "an integer"
	case float64, float32:
		return "a float"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}
