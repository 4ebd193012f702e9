// Package configs owns fleetgate's configuration file: the TOML schema (whose
// key names are a contract), strict loading that reports every problem with
// its file, line and key path, validation of everything the file refers to
// (client CAs, server certificates, token keys), the embedded demo default,
// and the commented example fleetgate.toml. It opens no sockets and starts no
// goroutines; its only I/O is reading the file and the files it names.
//
// Its part of the flow (DESIGN: decode → provision → validate → snapshot):
//
//	fleetgate.toml ─▶ go-toml/v2 ─▶ generic values ─┐
//	              └─▶ unstable parser ─▶ key path → line
//	                                                ▼
//	                        schema walk (schema.go, decode.go): defaults,
//	                        unknown keys, wrong types, durations, sizes
//	                                                ▼
//	                        checks and file reads (validate.go, certs.go,
//	                        apps.go): listeners, URLs, domains, CAs, keys,
//	                        policies via policy.ParseAction / ParseSelector
//	                                                ▼
//	                        *Config (plain data) ─▶ gateway builds sites,
//	                        pools, key set and swaps its snapshot
//	                or      *Errors{Problems, Warnings}: every problem as
//	                        "fleetgate.toml:31: applications[1].policies[0].include[2]: unknown selector \"comon_name\""
//
// Load and Parse never stop at the first problem: a file is either valid as
// a whole (a *Config, with Warnings) or refused with all its problems, so a
// reload either takes effect completely or not at all.
//
// Choices worth knowing:
//   - A missing [tokens].signing_key_file is an error unless
//     Options.AllowEphemeralKey is set.
//   - A policy with a certificate selector needs a client CA whose
//     associated_hostnames lists the application's domain exactly
//     (case-insensitive); a wildcard application needs the same wildcard.
//   - An application's session_duration is 24h when absent; "0s" means no
//     duration. A policy's session_duration overrides it only when present.
//   - protocol = "tcp" makes a raw-TCP application: a tcp://host:port
//     origin (tls://host:port: TLS to the origin, verified against
//     origin_ca_file or the system's roots), optional proxy_protocol ("v1", "v2"), and its own idle_timeout
//     (10m), max_connection_age (none) and relay_buffer (256KiB, 16KiB to
//     64MiB). It has no sessions: session_duration (on it or its policies),
//     service_auth_401 and session_tickets (a resumed TLS session proves no
//     key possession) are errors when written, and its
//     Application.SessionDuration is 0. The tcp-only keys are errors on an
//     http application, whose connections use the [gateway] values. Every
//     policy decision works on every protocol.
//   - protocol = "mqtt" is a tcp application (every tcp key applies) with
//     mqtt_client_id ("any", "common_name" or a template with one "{cn}"),
//     mqtt_username ("keep", "common_name"), mqtt_password ("keep",
//     "token", which needs mqtt_username = "common_name") and
//     max_connect_bytes (64KiB, 256 bytes to 1MiB): mqtt.go. These keys are
//     errors on other protocols, and reject_invalid_cert is an error on an
//     mqtt application (it always completes the handshake).
//   - Client-CA certificates that expire within 30 days, server certificates
//     that do not cover their domain, CAs without associated hostnames and
//     applications without policies are warnings, not errors.
//   - No two client-CA certificates (roots or intermediates, across all
//     [[client_cas]] entries) may share a subject DN with different public
//     keys: revocation is keyed by issuer name, so one CA's CRL would revoke
//     another's devices with the same serial. The same certificate listed
//     twice, or a cross-signed one (same subject and key), is fine.
//   - Each CRL of crl_files must be signed by a certificate of its client
//     CA's upload (matched by issuer name, key identifier first). A CRL past
//     its nextUpdate is a warning (crl_stale = "warn", the default) or an
//     error ("reject", which also makes the gateway refuse the CA's devices
//     once a loaded list passes its nextUpdate); indirect CRLs and unknown critical extensions are
//     errors. The Config carries the parsed lists (ClientCA.CRLs) and the
//     [revocation] deny-lists (Config.Revocation) as plain data: the
//     gateway builds the lookup set with tlsengine.NewRevocation.
//
// Files: load.go (Load, Parse, Options), schema.go (the keys and defaults),
// decode.go (decoding against the schema, durations, sizes), positions.go
// (key path → line), errors.go (Problem, Errors), values.go (listeners,
// URLs, domains), validate.go ([gateway], [tokens], [[client_cas]]),
// certs.go (PEM, certificates, files), crl.go (crl_files, crl_stale and
// [revocation]), lists.go ([[lists]] and [[service_tokens]], and the names
// selectors resolve), apps.go ([[applications]] and their policies), tcp.go
// (protocol, origins by protocol, the keys of tcp applications), config.go
// (the result), demo.go and demo.toml (the embedded demo).
package configs
