//! Parsers (and, for the emulator, renderers) of the router's text answers:
//! `GET /status`, `GET /status/ipam`, `GET /status/peers`, `GET /status/connections`.
//!
//! Formats: `weave-net.md` §2.1–2.4 (templates in `weave:prog/weaver/http.go`), checked
//! against the captured Weave Net 2.8 outputs in `tests/fixtures/`. Every parse error carries
//! the offending line and its number.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{PeerName, WeaveError};

fn parse_err(
    what: &'static str,
    line_no: usize,
    line: &str,
    message: impl Into<String>,
) -> WeaveError {
    WeaveError::Parse {
        what,
        line_no,
        line: line.to_string(),
        message: message.into(),
    }
}

/// Splits `name(nick)` into the peer name and the nickname (`None` when empty, as for a peer
/// whose nickname is unknown: `c2:35:ec:05:d8:a5()`).
fn split_name_nick(
    s: &str,
    what: &'static str,
    line_no: usize,
    line: &str,
) -> Result<(PeerName, Option<String>), WeaveError> {
    let open = s
        .find('(')
        .ok_or_else(|| parse_err(what, line_no, line, "expected `name(nickname)`"))?;
    if !s.ends_with(')') {
        return Err(parse_err(what, line_no, line, "expected `name(nickname)`"));
    }
    let name: PeerName = s[..open]
        .parse()
        .map_err(|e: WeaveError| parse_err(what, line_no, line, e.to_string()))?;
    let nick = &s[open + 1..s.len() - 1];
    Ok((name, (!nick.is_empty()).then(|| nick.to_string())))
}

// ---------------------------------------------------------------------------------------------
// /status/ipam

/// The suffix of one `/status/ipam` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpamPeerState {
    /// The answering router itself (always the first line): `(N active)` addresses in use.
    Local {
        /// `IPAM.ActiveIPs` of the answering router.
        active: u64,
    },
    /// A peer the answering router knows in its mesh topology (empty suffix, trailing space).
    Reachable,
    /// `- unreachable!`: the peer is absent from the answering router's topology. Dead and
    /// partitioned-away peers look exactly alike here.
    Unreachable,
}

/// One line of `GET /status/ipam`: one peer's share of the allocation range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IpamLine {
    /// The peer name (MAC form).
    pub peer: PeerName,
    /// The nickname (host name); `None` when the router printed `name()`.
    pub nickname: Option<String>,
    /// How many addresses the peer owns.
    pub ips: u64,
    /// The share of the whole range in percent, as printed (one decimal).
    pub percent: f64,
    /// Local, reachable or unreachable.
    pub state: IpamPeerState,
}

impl IpamLine {
    /// Whether the answering router considers the peer reachable (local or reachable).
    pub fn is_reachable(&self) -> bool {
        !matches!(self.state, IpamPeerState::Unreachable)
    }
}

const IPAM: &str = "GET /status/ipam";

/// Parses `GET /status/ipam` (format `"%-37v %8d IPs (%04.1f%% of total) %s\n"`).
///
/// An empty answer means the ring is empty (no consensus yet) and gives an empty list.
/// Whitespace is tolerated where Go pads (a name longer than 37 characters pushes the line
/// right); the trailing space of reachable lines may be missing (stripped by an editor).
///
/// ```
/// use fleetscale_weave::status::{parse_ipam, IpamPeerState};
/// let text = "00:00:00:00:00:05(dyn5)                 262144 IPs (25.0% of total) - unreachable!\n";
/// let lines = parse_ipam(text).unwrap();
/// assert_eq!(lines[0].ips, 262144);
/// assert_eq!(lines[0].state, IpamPeerState::Unreachable);
/// ```
pub fn parse_ipam(text: &str) -> Result<Vec<IpamLine>, WeaveError> {
    let mut out = Vec::new();
    for (line_no, line) in content_lines(text) {
        out.push(parse_ipam_line(line, line_no, out.is_empty())?);
    }
    Ok(out)
}

fn parse_ipam_line(line: &str, line_no: usize, first: bool) -> Result<IpamLine, WeaveError> {
    const MARK: &str = " IPs (";
    let at = line
        .rfind(MARK)
        .ok_or_else(|| parse_err(IPAM, line_no, line, "missing ` IPs (`"))?;
    let left = line[..at].trim_end();
    // Digits are one byte each, so counting them from the end stays on a char boundary even
    // when a multi-byte character precedes them (a fuzzer found the `rfind(..) + 1` version
    // slicing inside such a character).
    let digits_start = left.len() - left.bytes().rev().take_while(u8::is_ascii_digit).count();
    let ips: u64 = left[digits_start..]
        .parse()
        .map_err(|_| parse_err(IPAM, line_no, line, "missing IP count"))?;
    let name_nick = left[..digits_start].trim_end();
    if name_nick.is_empty() || name_nick.starts_with(char::is_whitespace) {
        return Err(parse_err(IPAM, line_no, line, "missing peer name"));
    }
    let (peer, nickname) = split_name_nick(name_nick, IPAM, line_no, line)?;
    let right = &line[at + MARK.len()..];
    let (pct, rest) = right
        .split_once("% of total)")
        .ok_or_else(|| parse_err(IPAM, line_no, line, "missing `% of total)`"))?;
    let percent: f64 = pct
        .trim()
        .parse()
        .map_err(|_| parse_err(IPAM, line_no, line, "bad percentage"))?;
    let suffix = rest.trim();
    let state = if suffix.is_empty() {
        IpamPeerState::Reachable
    } else if suffix == "- unreachable!" {
        IpamPeerState::Unreachable
    } else if let Some(n) = suffix
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(" active)"))
    {
        let active = n
            .parse()
            .map_err(|_| parse_err(IPAM, line_no, line, "bad `(N active)` count"))?;
        // The local line is always first (`printIPAMRanges` prints it before the others).
        if !first {
            return Err(parse_err(
                IPAM,
                line_no,
                line,
                "`(N active)` (the local peer) may only be on the first line",
            ));
        }
        IpamPeerState::Local { active }
    } else {
        return Err(parse_err(IPAM, line_no, line, "unknown suffix"));
    };
    Ok(IpamLine {
        peer,
        nickname,
        ips,
        percent,
        state,
    })
}

/// Renders one `/status/ipam` line exactly as Weave does, for the emulator:
/// `"%-37v %8d IPs (%04.1f%% of total) %s\n"`.
///
/// The percentage is computed in `f32` (as Go does) and printed with one decimal, zero-padded
/// to width 4 (`06.2`). Go rounds the binary value half-to-even; Rust's formatting does the same
/// for the exactly-representable halves that occur here (6.25 → `06.2`), see the tests.
pub fn render_ipam_line(
    peer: PeerName,
    nickname: Option<&str>,
    ips: u64,
    range_size: u64,
    state: IpamPeerState,
) -> String {
    let name = format!("{peer}({})", nickname.unwrap_or(""));
    let pct = if range_size == 0 {
        0.0f32
    } else {
        (ips as f32) * 100.0 / (range_size as f32)
    };
    let suffix = match state {
        IpamPeerState::Local { active } => format!("({active} active)"),
        IpamPeerState::Reachable => String::new(),
        IpamPeerState::Unreachable => "- unreachable!".to_string(),
    };
    format!("{name:<37} {ips:>8} IPs ({pct:04.1}% of total) {suffix}\n")
}

// ---------------------------------------------------------------------------------------------
// /status

/// The IPAM `Status:` line of `GET /status` (`weave-net.md` §2.2, `statusTemplate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpamStatus {
    /// `ready`.
    Ready,
    /// `waiting for IP(s) to become available`.
    WaitingForIps,
    /// `all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead`.
    AllRangesUnreachable,
    /// `awaiting consensus (quorum: Q, known: K)`.
    AwaitingConsensus {
        /// How many electors must agree before the IPAM ring is created (Paxos quorum).
        quorum: u32,
        /// How many electors this peer has heard from so far.
        known: u32,
    },
    /// `priming`: an observer waiting for a ring.
    Priming,
    /// `idle`: no ring and no request yet.
    Idle,
    /// Any other text (other versions).
    Other(String),
}

impl IpamStatus {
    fn parse(s: &str) -> IpamStatus {
        match s {
            "ready" => IpamStatus::Ready,
            "waiting for IP(s) to become available" | "waiting for IP range grant from peers" => {
                IpamStatus::WaitingForIps
            }
            "priming" => IpamStatus::Priming,
            "idle" => IpamStatus::Idle,
            s if s.starts_with("all IP ranges owned by unreachable peers") => {
                IpamStatus::AllRangesUnreachable
            }
            s => {
                let nums = s
                    .strip_prefix("awaiting consensus (quorum: ")
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|r| r.split_once(", known: "))
                    .and_then(|(q, k)| Some((q.parse().ok()?, k.parse().ok()?)));
                match nums {
                    Some((quorum, known)) => IpamStatus::AwaitingConsensus { quorum, known },
                    None => IpamStatus::Other(s.to_string()),
                }
            }
        }
    }
}

/// `GET /status`, parsed: a `Version:` line then one block of `Key: value` lines per service
/// (`router`, `ipam`, `dns`, `proxy`, `plugin`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// The `Version:` line's value.
    pub version: Option<String>,
    /// Each service's keys and values, by service name (`router`, `ipam`, ...).
    pub services: BTreeMap<String, BTreeMap<String, String>>,
}

impl RouterStatus {
    /// A value of one service, e.g. `get("router", "Name")`.
    pub fn get(&self, service: &str, key: &str) -> Option<&str> {
        self.services.get(service)?.get(key).map(String::as_str)
    }

    /// The router's own `name(nickname)`, split.
    pub fn name(&self) -> Option<(PeerName, Option<String>)> {
        let v = self.get("router", "Name")?;
        split_name_nick(v, STATUS, 0, v).ok()
    }

    /// The IPAM `Status:` line, when IPAM is enabled.
    pub fn ipam_status(&self) -> Option<IpamStatus> {
        self.get("ipam", "Status").map(IpamStatus::parse)
    }

    /// The IPAM `Range:` (CIDR, or `a-b` in older versions).
    pub fn ipam_range(&self) -> Option<&str> {
        self.get("ipam", "Range")
    }
}

const STATUS: &str = "GET /status";

/// Parses `GET /status`.
pub fn parse_status(text: &str) -> Result<RouterStatus, WeaveError> {
    let mut st = RouterStatus::default();
    let mut current: Option<String> = None;
    for (line_no, line) in content_lines(text) {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| parse_err(STATUS, line_no, line, "expected `Key: value`"))?;
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(parse_err(STATUS, line_no, line, "bad key"));
        }
        match key {
            "Version" if current.is_none() => st.version = Some(value.to_string()),
            "Service" => {
                current = Some(value.to_string());
                st.services.entry(value.to_string()).or_default();
            }
            _ => {
                let service = current.clone().ok_or_else(|| {
                    parse_err(STATUS, line_no, line, "key before any `Service:` line")
                })?;
                st.services
                    .entry(service)
                    .or_default()
                    .insert(key.to_string(), value.to_string());
            }
        }
    }
    Ok(st)
}

// ---------------------------------------------------------------------------------------------
// /status/peers and /status/connections

/// Direction of a connection: `->` outbound, `<-` inbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// `->`: we dialled.
    Outbound,
    /// `<-`: they dialled.
    Inbound,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        match s {
            "->" => Some(Direction::Outbound),
            "<-" => Some(Direction::Inbound),
            _ => None,
        }
    }
}

/// One connection of a peer in `GET /status/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConnection {
    /// Who dialled: this peer (`->`) or the remote one (`<-`).
    pub direction: Direction,
    /// `ip:port`.
    pub address: String,
    /// The remote peer's name.
    pub peer: PeerName,
    /// The remote peer's nickname.
    pub nickname: Option<String>,
    /// `true` for `established`, `false` for `pending`.
    pub established: bool,
}

/// One peer of `GET /status/peers` with its connections, as the answering router knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's name.
    pub peer: PeerName,
    /// The peer's nickname (host name); `None` when the router printed `name()`.
    pub nickname: Option<String>,
    /// The peer's connections to other peers, as the answering router knows them.
    pub connections: Vec<PeerConnection>,
}

const PEERS: &str = "GET /status/peers";

/// Parses `GET /status/peers`: a `name(nick)` line per peer, then one indented line per
/// connection: `   -> ADDRESS NAME(NICK) established|pending`.
pub fn parse_peers(text: &str) -> Result<Vec<PeerStatus>, WeaveError> {
    let mut out: Vec<PeerStatus> = Vec::new();
    for (line_no, line) in content_lines(text) {
        if !line.starts_with(char::is_whitespace) {
            let (peer, nickname) = split_name_nick(line.trim_end(), PEERS, line_no, line)?;
            out.push(PeerStatus {
                peer,
                nickname,
                connections: Vec::new(),
            });
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        let [dir, address, name_nick, state] = toks[..] else {
            return Err(parse_err(
                PEERS,
                line_no,
                line,
                "expected `-> ADDRESS NAME(NICK) STATE`",
            ));
        };
        let direction = Direction::parse(dir)
            .ok_or_else(|| parse_err(PEERS, line_no, line, "expected `->` or `<-`"))?;
        let (peer, nickname) = split_name_nick(name_nick, PEERS, line_no, line)?;
        let established = match state {
            "established" => true,
            "pending" => false,
            _ => {
                return Err(parse_err(
                    PEERS,
                    line_no,
                    line,
                    "expected established or pending",
                ))
            }
        };
        let owner = out
            .last_mut()
            .ok_or_else(|| parse_err(PEERS, line_no, line, "connection before any peer line"))?;
        owner.connections.push(PeerConnection {
            direction,
            address: address.to_string(),
            peer,
            nickname,
            established,
        });
    }
    Ok(out)
}

/// One line of `GET /status/connections`: a local connection or connection attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// Who dialled: this peer (`->`) or the remote one (`<-`).
    pub direction: Direction,
    /// `ip:port`.
    pub address: String,
    /// `established`, `pending`, `connecting`, `retrying`, `failed` or `waiting`.
    pub state: String,
    /// The info field: `sleeve NAME(NICK)` for live connections, the error for failed ones.
    pub info: String,
    /// The attributes, as printed: `key=value` pairs with no separator (`mtu=1438`,
    /// `encrypted=truemtu=8192`), the `name` key left out. Empty when none.
    pub attrs: String,
}

impl ConnectionStatus {
    /// The remote peer of a live connection (`established`/`pending`), from the info field.
    pub fn remote(&self) -> Option<(PeerName, Option<String>)> {
        let last = self.info.split_whitespace().last()?;
        split_name_nick(last, CONNS, 0, last).ok()
    }
}

const CONNS: &str = "GET /status/connections";
const CONN_STATES: [&str; 6] = [
    "established",
    "pending",
    "connecting",
    "retrying",
    "failed",
    "waiting",
];

/// Parses `GET /status/connections`: `DIR ADDRESS(%-21) STATE(%-11) INFO ATTRS`.
pub fn parse_connections(text: &str) -> Result<Vec<ConnectionStatus>, WeaveError> {
    let mut out = Vec::new();
    for (line_no, line) in content_lines(text) {
        let mut toks = line.splitn(2, ' ');
        let dir = toks.next().unwrap_or_default();
        let direction = Direction::parse(dir)
            .ok_or_else(|| parse_err(CONNS, line_no, line, "expected `->` or `<-`"))?;
        let rest = toks.next().unwrap_or_default().trim_start();
        let (address, rest) = rest
            .split_once(' ')
            .ok_or_else(|| parse_err(CONNS, line_no, line, "missing state"))?;
        let rest = rest.trim_start();
        let (state, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if !CONN_STATES.contains(&state) {
            return Err(parse_err(CONNS, line_no, line, "unknown connection state"));
        }
        let rest = rest.trim();
        // INFO and ATTRS are joined by one space; attributes never contain spaces and always
        // contain `=`, so the last word is the attributes iff it contains `=`.
        let (info, attrs) = match rest.rsplit_once(' ') {
            Some((info, last)) if last.contains('=') => (info.trim_end(), last),
            _ if !rest.contains(' ') && rest.contains('=') => ("", rest),
            _ => (rest, ""),
        };
        out.push(ConnectionStatus {
            direction,
            address: address.to_string(),
            state: state.to_string(),
            info: info.to_string(),
            attrs: attrs.to_string(),
        });
    }
    Ok(out)
}

/// The lines of a router's text answer that carry content, each with its 1-based line number
/// (blank lines are skipped, but still counted, so errors point at the line as printed).
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_before_the_ip_count_is_an_error_not_a_panic() {
        let line = "00:00:00:00:00:01(fixed1)               3\u{e9}27680 IPs (06.2% of total) (1 active)\n";
        assert!(parse_ipam(line).is_err());
        let ok = parse_ipam(
            "00:00:00:00:00:01(fix\u{e9}d1)    327680 IPs (06.2% of total) (1 active)\n",
        )
        .unwrap();
        assert_eq!(ok[0].ips, 327680);
    }

    #[test]
    fn renders_percentages_like_go() {
        let p: PeerName = "::1".parse().unwrap();
        let l = render_ipam_line(
            p,
            Some("fixed1"),
            65536,
            1 << 20,
            IpamPeerState::Local { active: 1 },
        );
        assert_eq!(
            l,
            "00:00:00:00:00:01(fixed1)                65536 IPs (06.2% of total) (1 active)\n"
        );
        let l = render_ipam_line(p, Some("x"), 196608, 1 << 20, IpamPeerState::Reachable);
        assert!(l.contains("(18.8% of total) \n"), "{l}");
        let l = render_ipam_line(p, Some("x"), 327680, 1 << 20, IpamPeerState::Reachable);
        assert!(l.contains("(31.2% of total)"), "{l}");
        let l = render_ipam_line(p, Some("x"), 458752, 1 << 20, IpamPeerState::Reachable);
        assert!(l.contains("(43.8% of total)"), "{l}");
        let l = render_ipam_line(p, None, 0, 1 << 20, IpamPeerState::Unreachable);
        assert!(l.starts_with("00:00:00:00:00:01() "), "{l}");
        assert!(l.contains("(00.0% of total) - unreachable!\n"), "{l}");
    }

    #[test]
    fn blank_lines_are_skipped_but_counted_in_every_parser() {
        // An empty and a whitespace-only line, then a bad one: the error names line 3, the
        // line as the router printed it.
        let text = "\n   \ngarbage\n";
        let errors = [
            ("ipam", parse_ipam(text).err()),
            ("status", parse_status(text).err()),
            ("peers", parse_peers(text).err()),
            ("connections", parse_connections(text).err()),
        ];
        for (parser, e) in errors {
            match e {
                Some(WeaveError::Parse { line_no, line, .. }) => {
                    assert_eq!((line_no, line.as_str()), (3, "garbage"), "{parser}");
                }
                other => panic!("{parser}: {other:?}"),
            }
        }
    }

    #[test]
    fn ipam_errors_carry_the_line() {
        let text =
            "00:00:00:00:00:01(fixed1)  65536 IPs (06.2% of total) (1 active)\ngarbage here\n";
        match parse_ipam(text) {
            Err(WeaveError::Parse { line_no, line, .. }) => {
                assert_eq!(line_no, 2);
                assert_eq!(line, "garbage here");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_ipam("dyn5(dyn5)  1 IPs (00.0% of total) \n").is_err());
        assert!(parse_ipam("00:00:00:00:00:01(a)  1 IPs (00.0% of total) whatever\n").is_err());
        assert!(parse_ipam("00:00:00:00:00:01(a)  x IPs (00.0% of total) \n").is_err());
        assert_eq!(parse_ipam("").unwrap(), vec![]);
    }

    #[test]
    fn local_line_only_first() {
        let text = "00:00:00:00:00:02(b)  1 IPs (00.0% of total) \n00:00:00:00:00:01(a)  1 IPs (00.0% of total) (1 active)\n";
        assert!(parse_ipam(text).is_err());
    }

    #[test]
    fn long_names_and_unknown_nicknames() {
        let t = "22:67:0f:db:d8:a2(ip-10-20-44-238.eu-central-1.compute.internal)   262144 IPs (12.5% of total) - unreachable!\nc2:35:ec:05:d8:a5()  5 IPs (00.0% of total) ";
        let l = parse_ipam(t).unwrap();
        assert_eq!(
            l[0].nickname.as_deref(),
            Some("ip-10-20-44-238.eu-central-1.compute.internal")
        );
        assert_eq!(l[0].percent, 12.5);
        assert_eq!(l[1].nickname, None);
        assert_eq!(l[1].state, IpamPeerState::Reachable);
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            IpamStatus::parse("awaiting consensus (quorum: 2, known: 1)"),
            IpamStatus::AwaitingConsensus {
                quorum: 2,
                known: 1
            }
        );
        assert_eq!(
            IpamStatus::parse(
                "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead"
            ),
            IpamStatus::AllRangesUnreachable
        );
        assert!(parse_status("no colon here").is_err());
        assert!(parse_status("  Name: x\n").is_err());
    }
}
