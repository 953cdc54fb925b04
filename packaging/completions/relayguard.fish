# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_relayguard_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_relayguard_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_relayguard_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_relayguard_using_subcommand
    set -l cmd (__fish_relayguard_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c relayguard -n "__fish_relayguard_needs_command" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_needs_command" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_needs_command" -s V -l version -d 'Print version'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "run" -d 'Serve the milter protocol'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "check-config" -d 'Validate the configuration and every file it names; exit non-zero on any error'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "explain" -d 'Print the decision for a transaction and why, without a socket'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "bench" -d 'Load a milter as Postfix does and report throughput, latency, outcomes and, for a given server PID, CPU per message and peak RSS'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "accounts" -d 'Account locks: list, lock, unlock'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "audit" -d 'Audit trail tools'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "keys" -d 'DKIM key tooling: generate keys, print DNS records, show rotation status'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "completions" -d 'Print a shell completion script (the package installs them)'
complete -c relayguard -n "__fish_relayguard_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand run" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand run" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand check-config" -l service-user -d 'The user the service runs as: checks that it can read the keys and write the socket directory and audit log (skipped when the user does not exist)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand check-config" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand check-config" -l offline -d 'Do not look up the selectors\' DNS records (nor the directory)'
complete -c relayguard -n "__fish_relayguard_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -l login -d 'SASL login of the session (omit for an unauthenticated client)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -l client -d 'Client IP address' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -l client-name -d 'The client\'s forward-confirmed host name, as Postfix\'s `{client_name}`' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -l mail-from -d 'Envelope sender (MAIL FROM); empty for the null sender' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -l rcpt -d 'Envelope recipient (RCPT TO); repeat for several' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -l daemon-name -d 'Postfix\'s `{daemon_name}` (selects classes such as `eas`)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand explain" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l target -d '`unix:/path` or `inet:PORT@HOST` of the milter' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -s n -l connections -d 'Concurrent connections' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -s m -l messages -d 'Messages per connection' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l size -d 'Body size in bytes' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l rcpts -d 'Recipients per message' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l login -d 'SASL login ("" for none: an unauthenticated client)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l from -d 'Header From and envelope sender' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l logins -d 'Distinct logins: with N > 1, message k sends as login `LOGIN<k mod N>` from `LOGIN<k mod N>@DOMAIN` (DOMAIN from --from), so a directory sees N different users' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l client -d 'The SMTP client\'s address, as the MTA passes it' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l rcpt-domain -d 'The recipients\' domain: recipient n is `rcpt<n>@DOMAIN`' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l pid -d 'The milter\'s PID, for CPU and memory figures' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l ceiling -d 'Instead of loading a milter, measure the signing ceiling of this key file: how many signatures per second `--threads` threads make with nothing else to do' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l threads -d 'Threads for `--ceiling`' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -l seconds -d 'Seconds for `--ceiling`' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand bench" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -f -a "list" -d 'List locked accounts'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -f -a "lock" -d 'Lock an account: all its mail is refused until unlocked'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -f -a "unlock" -d 'Unlock an account'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -f -a "why" -d 'Show an account\'s stolen-account signals and score now (from Redis, or from the running relay\'s metrics endpoint when signals are kept in its memory), and its lock'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and not __fish_seen_subcommand_from list lock unlock why help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from list" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from lock" -l reason -d 'Why (shown in the reply)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from lock" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from lock" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from unlock" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from unlock" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from why" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from why" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "list" -d 'List locked accounts'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "lock" -d 'Lock an account: all its mail is refused until unlocked'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "unlock" -d 'Unlock an account'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "why" -d 'Show an account\'s stolen-account signals and score now (from Redis, or from the running relay\'s metrics endpoint when signals are kept in its memory), and its lock'
complete -c relayguard -n "__fish_relayguard_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and not __fish_seen_subcommand_from report verify keygen help" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and not __fish_seen_subcommand_from report verify keygen help" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and not __fish_seen_subcommand_from report verify keygen help" -f -a "report" -d 'Summarise audit files (plain, rotated or gzip\'d) per login'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and not __fish_seen_subcommand_from report verify keygen help" -f -a "verify" -d 'Walk the hash chain through audit files (oldest first, plain or gzip\'d) and report the first broken link; exits 1 when the chain is broken or, with --key, unproven'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and not __fish_seen_subcommand_from report verify keygen help" -f -a "keygen" -d 'Make an Ed25519 checkpoint key: FILE (private, mode 0600) and FILE.pub (for auditors)'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and not __fish_seen_subcommand_from report verify keygen help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -l since -d 'Only records at or after this time (RFC 3339)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -l until -d 'Only records before this time (RFC 3339)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -l login -d 'Only this login' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -l format -d 'table, json, csv or html (one self-contained page, the chain verified on top)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -l key -d 'Public key that checks checkpoints (html; repeat for older keys)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -s o -l output -d 'Write to this file instead of standard output' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from report" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from verify" -l key -d 'Public key that checks checkpoints (repeat for older keys)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from verify" -l checkpoint-minutes -d 'The relay\'s `audit.checkpoint_minutes`: with --key, records that go longer without a checkpoint (plus 5 %, at least 5 s) are a break' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from verify" -l witness -d 'An outside witness of the checkpoints: the `audit.witness_file`, a saved log of the service, or `journal` (the systemd journal)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from verify" -l format -d 'text or json' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from verify" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from keygen" -l out -d 'Where the private key goes' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from keygen" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from keygen" -l force -d 'Replace an existing key'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from keygen" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "report" -d 'Summarise audit files (plain, rotated or gzip\'d) per login'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Walk the hash chain through audit files (oldest first, plain or gzip\'d) and report the first broken link; exits 1 when the chain is broken or, with --key, unproven'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "keygen" -d 'Make an Ed25519 checkpoint key: FILE (private, mode 0600) and FILE.pub (for auditors)'
complete -c relayguard -n "__fish_relayguard_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "generate" -d 'Generate a private key (mode 0600) and add its selector to selectors.toml'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "bootstrap" -d 'Give every protected domain without any selector an RSA-2048 key that signs at once (the package runs this on first install; publish the records with `keys dns`)'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "dns" -d 'Print the DNS TXT records that must be published now, later, and may be removed'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "status" -d 'Show per domain what signs now, what is next and when, and what is overdue'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "publish" -d 'Put the records of selectors whose `publish` has come into the zone and take out those retired past the grace period (RFC 2136, [dkim.publish])'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "rotate" -d 'One rotation pass ([dkim.rotation]): make the successor keys that are due, set retire_at, remove long-retired selectors, then publish (for a cron job or timer on one host of a cluster)'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and not __fish_seen_subcommand_from generate bootstrap dns status publish rotate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -l domain -d 'Signing domain (d=)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -l selector -d 'Selector name (s=)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -l algorithm -d 'rsa-2048, rsa-3072, rsa-4096 or ed25519' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -l publish -d 'When the DNS record goes out (RFC 3339; default now)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -l active-from -d 'When it starts signing (RFC 3339; default publish + 48 h)' -r
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -l print -d 'Print the stanza instead of appending it to selectors.toml'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from generate" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from bootstrap" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from bootstrap" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from dns" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from dns" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from status" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from publish" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from publish" -l dry-run -d 'Say what would change; change nothing'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from publish" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from rotate" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l dry-run -d 'Say what would change; change nothing'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "generate" -d 'Generate a private key (mode 0600) and add its selector to selectors.toml'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "bootstrap" -d 'Give every protected domain without any selector an RSA-2048 key that signs at once (the package runs this on first install; publish the records with `keys dns`)'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "dns" -d 'Print the DNS TXT records that must be published now, later, and may be removed'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show per domain what signs now, what is next and when, and what is overdue'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "publish" -d 'Put the records of selectors whose `publish` has come into the zone and take out those retired past the grace period (RFC 2136, [dkim.publish])'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'One rotation pass ([dkim.rotation]): make the successor keys that are due, set retire_at, remove long-retired selectors, then publish (for a cron job or timer on one host of a cluster)'
complete -c relayguard -n "__fish_relayguard_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand completions" -s c -l config -d 'Configuration file (every command reads the same one)' -r -F
complete -c relayguard -n "__fish_relayguard_using_subcommand completions" -s h -l help -d 'Print help'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "run" -d 'Serve the milter protocol'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "check-config" -d 'Validate the configuration and every file it names; exit non-zero on any error'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "explain" -d 'Print the decision for a transaction and why, without a socket'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "bench" -d 'Load a milter as Postfix does and report throughput, latency, outcomes and, for a given server PID, CPU per message and peak RSS'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "accounts" -d 'Account locks: list, lock, unlock'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "audit" -d 'Audit trail tools'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "keys" -d 'DKIM key tooling: generate keys, print DNS records, show rotation status'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "completions" -d 'Print a shell completion script (the package installs them)'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config explain bench accounts audit keys completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "list" -d 'List locked accounts'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "lock" -d 'Lock an account: all its mail is refused until unlocked'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "unlock" -d 'Unlock an account'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "why" -d 'Show an account\'s stolen-account signals and score now (from Redis, or from the running relay\'s metrics endpoint when signals are kept in its memory), and its lock'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "report" -d 'Summarise audit files (plain, rotated or gzip\'d) per login'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Walk the hash chain through audit files (oldest first, plain or gzip\'d) and report the first broken link; exits 1 when the chain is broken or, with --key, unproven'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "keygen" -d 'Make an Ed25519 checkpoint key: FILE (private, mode 0600) and FILE.pub (for auditors)'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "generate" -d 'Generate a private key (mode 0600) and add its selector to selectors.toml'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "bootstrap" -d 'Give every protected domain without any selector an RSA-2048 key that signs at once (the package runs this on first install; publish the records with `keys dns`)'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "dns" -d 'Print the DNS TXT records that must be published now, later, and may be removed'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "status" -d 'Show per domain what signs now, what is next and when, and what is overdue'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "publish" -d 'Put the records of selectors whose `publish` has come into the zone and take out those retired past the grace period (RFC 2136, [dkim.publish])'
complete -c relayguard -n "__fish_relayguard_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "rotate" -d 'One rotation pass ([dkim.rotation]): make the successor keys that are due, set retire_at, remove long-retired selectors, then publish (for a cron job or timer on one host of a cluster)'
