//! SIP messages: requests built as `rsip` requests, datagrams parsed with `rsip`, and the few
//! header fields transactions and dialogs need read from them. Anything that does not parse is
//! an error for the caller to drop and count.

use rsip::headers::UntypedHeader;
use std::fmt::Write;
use thiserror::Error;

/// Largest datagram accepted; anything longer is dropped (SIP over UDP stays under the MTU).
pub const MAX_DATAGRAM: usize = 16 * 1024;
/// RFC 3261 magic cookie every branch starts with.
const BRANCH_COOKIE: &str = "z9hG4bK";

/// Why a datagram was dropped, or an extra header refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SipError {
    #[error("datagram of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("not a SIP message: {0}")]
    Unparsable(String),
    #[error("SIP message without {0}")]
    Missing(&'static str),
    #[error("{0}")]
    BadHeader(String),
}

/// A parsed datagram: a response, or a request from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Response(Response),
    Request(PeerRequest),
}

/// What a client transaction needs of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    /// Status line text as `rsip` renders it, e.g. `180 Ringing`.
    pub status: String,
    pub branch: String,
    pub call_id: String,
    pub cseq_method: String,
    /// The `To` tag (the remote end of the dialog), once the peer set it.
    pub to_tag: Option<String>,
    /// The peer's `Contact` URI, the target of in-dialog requests.
    pub contact: Option<String>,
}

/// A request the peer sent within a call (BYE, NOTIFY, ...), to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    pub method: String,
    pub call_id: String,
    /// Header lines to copy into the answer: Via, From, To, Call-ID, CSeq.
    pub echo: Vec<(String, String)>,
}

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<Incoming, SipError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(SipError::TooLarge(datagram.len()));
    }
    let message = rsip::SipMessage::try_from(datagram)
        .map_err(|e| SipError::Unparsable(e.to_string().chars().take(120).collect()))?;
    match message {
        rsip::SipMessage::Response(r) => {
            let headers = header_lines(&r.headers);
            let via = find(&headers, "via").ok_or(SipError::Missing("Via"))?;
            let cseq = find(&headers, "cseq").ok_or(SipError::Missing("CSeq"))?;
            let code = r.status_code.code();
            Ok(Incoming::Response(Response {
                code,
                status: status_line(datagram, code),
                branch: param(via, "branch").ok_or(SipError::Missing("branch"))?,
                call_id: find(&headers, "call-id")
                    .ok_or(SipError::Missing("Call-ID"))?
                    .to_owned(),
                cseq_method: cseq
                    .split_whitespace()
                    .nth(1)
                    .ok_or(SipError::Missing("CSeq method"))?
                    .to_ascii_uppercase(),
                to_tag: find(&headers, "to").and_then(|to| param(to, "tag")),
                contact: find(&headers, "contact").and_then(uri_of),
            }))
        }
        rsip::SipMessage::Request(r) => {
            let headers = header_lines(&r.headers);
            let echo: Vec<(String, String)> = headers
                .iter()
                .filter(|(n, _)| matches!(n.as_str(), "via" | "from" | "to" | "call-id" | "cseq"))
                .map(|(n, v)| (canonical(n).to_owned(), v.clone()))
                .collect();
            Ok(Incoming::Request(PeerRequest {
                method: r.method.to_string(),
                call_id: find(&headers, "call-id")
                    .ok_or(SipError::Missing("Call-ID"))?
                    .to_owned(),
                echo,
            }))
        }
    }
}

/// `code reason` as the peer wrote it on its status line (printable, at most 64 characters).
fn status_line(datagram: &[u8], code: u16) -> String {
    let line = datagram
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or_default();
    let reason: String = String::from_utf8_lossy(line)
        .splitn(3, ' ')
        .nth(2)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("{code} {}", reason.trim())
}

/// Every header as (lowercase full name, value), compact forms expanded.
fn header_lines(headers: &rsip::Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|h| {
            let line = h.to_string();
            let (name, value) = line.split_once(':')?;
            let name = match name.trim().to_ascii_lowercase().as_str() {
                "v" => "via".to_owned(),
                "f" => "from".to_owned(),
                "t" => "to".to_owned(),
                "i" => "call-id".to_owned(),
                "m" => "contact".to_owned(),
                other => other.to_owned(),
            };
            Some((name, value.trim().to_owned()))
        })
        .collect()
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn canonical(name: &str) -> &str {
    match name {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "call-id" => "Call-ID",
        "cseq" => "CSeq",
        other => other,
    }
}

/// A `;name=value` parameter of a header value.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_end_matches('>').to_owned())
    })
}

/// The URI of a name-addr (`"x" <sip:a@b>;p`) or addr-spec (`sip:a@b;p`).
fn uri_of(value: &str) -> Option<String> {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split(';').next()?.trim(),
    };
    uri.starts_with("sip:").then(|| uri.to_owned())
}

/// A fresh branch, tag or Call-ID token.
pub fn token() -> String {
    hex::encode(rand::random::<[u8; 10]>())
}

pub fn new_branch() -> String {
    format!("{BRANCH_COOKIE}{}", token())
}

/// Extra headers a caller adds to an INVITE (`header_NAME=value`): a token name that is not
/// one the user agent owns, and a value that cannot start another header line.
pub fn check_extra_header(name: &str, value: &str) -> Result<(), SipError> {
    const OWNED: &[&str] = &[
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "max-forwards",
        "content-length",
        "content-type",
        "route",
        "record-route",
        "p-asserted-identity",
        "v",
        "f",
        "t",
        "i",
        "m",
        "l",
        "c",
    ];
    let token = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    if !token {
        return Err(SipError::BadHeader(format!(
            "header name {name:?} is not a SIP token (letters, digits, '-')"
        )));
    }
    if OWNED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(SipError::BadHeader(format!(
            "header {name} is set by the user agent and cannot be given"
        )));
    }
    if value.len() > 256 || value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(SipError::BadHeader(format!(
            "header {name}: the value must be at most 256 characters without line breaks or control characters"
        )));
    }
    Ok(())
}

/// A request ready to send: `rsip` renders it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: rsip::Method,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    /// The bytes on the wire; `Content-Length` is added from the body.
    pub fn encode(&self) -> Result<Vec<u8>, SipError> {
        let uri = rsip::Uri::try_from(self.uri.as_str())
            .map_err(|e| SipError::BadHeader(format!("request URI {:?}: {e}", self.uri)))?;
        let mut headers: Vec<rsip::Header> = self
            .headers
            .iter()
            .map(|(name, value)| typed(name, value))
            .collect();
        headers.push(rsip::Header::ContentLength(
            rsip::headers::ContentLength::new(self.body.len().to_string()),
        ));
        let request = rsip::Request {
            method: self.method,
            uri,
            version: rsip::Version::V2,
            headers: headers.into(),
            body: self.body.clone(),
        };
        Ok(request.to_string().into_bytes())
    }
}

/// The `rsip` header for a name and value.
fn typed(name: &str, value: &str) -> rsip::Header {
    use rsip::headers as h;
    match name {
        "Via" => rsip::Header::Via(h::Via::new(value)),
        "From" => rsip::Header::From(h::From::new(value)),
        "To" => rsip::Header::To(h::To::new(value)),
        "Call-ID" => rsip::Header::CallId(h::CallId::new(value)),
        "CSeq" => rsip::Header::CSeq(h::CSeq::new(value)),
        "Contact" => rsip::Header::Contact(h::Contact::new(value)),
        "Max-Forwards" => rsip::Header::MaxForwards(h::MaxForwards::new(value)),
        "Content-Type" => rsip::Header::ContentType(h::ContentType::new(value)),
        "User-Agent" => rsip::Header::UserAgent(h::UserAgent::new(value)),
        _ => rsip::Header::Other(name.to_owned(), value.to_owned()),
    }
}

/// An answer to a peer's request, echoing its transaction headers.
pub fn answer(request: &PeerRequest, code: u16, reason: &str) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &request.echo {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RINGING: &str = "SIP/2.0 180 Ringing\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport\r\n\
        From: <sip:441000@127.0.0.1>;tag=local1\r\n\
        To: <sip:447700900123@127.0.0.1>;tag=remote9\r\n\
        Call-ID: call-1@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Contact: <sip:uas@127.0.0.1:5060;transport=UDP>\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn reads_what_transactions_need_from_a_response() {
        let Incoming::Response(r) = parse(RINGING.as_bytes()).unwrap() else {
            panic!("a response");
        };
        assert_eq!(r.code, 180);
        assert_eq!(r.status, "180 Ringing");
        assert_eq!(r.branch, "z9hG4bKabc");
        assert_eq!(r.call_id, "call-1@127.0.0.1");
        assert_eq!(r.cseq_method, "INVITE");
        assert_eq!(r.to_tag.as_deref(), Some("remote9"));
        assert_eq!(
            r.contact.as_deref(),
            Some("sip:uas@127.0.0.1:5060;transport=UDP")
        );
    }

    #[test]
    fn compact_header_names_are_understood() {
        let compact = RINGING
            .replace("Via:", "v:")
            .replace("Call-ID:", "i:")
            .replace("To:", "t:");
        let Incoming::Response(r) = parse(compact.as_bytes()).unwrap() else {
            panic!("a response");
        };
        assert_eq!(
            (r.branch.as_str(), r.call_id.as_str()),
            ("z9hG4bKabc", "call-1@127.0.0.1")
        );
    }

    #[test]
    fn a_request_is_built_and_parses_back() {
        let invite = Outgoing {
            method: rsip::Method::Invite,
            uri: "sip:447700900123@127.0.0.1:5060".into(),
            headers: vec![
                (
                    "Via".into(),
                    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1;rport".into(),
                ),
                ("From".into(), "<sip:441000@127.0.0.1>;tag=t1".into()),
                ("To".into(), "<sip:447700900123@127.0.0.1:5060>".into()),
                ("Call-ID".into(), "c1@127.0.0.1".into()),
                ("CSeq".into(), "1 INVITE".into()),
                (
                    "P-Asserted-Identity".into(),
                    "<sip:441000@127.0.0.1>".into(),
                ),
                ("X-Campaign".into(), "spring".into()),
            ],
            body: b"v=0\r\n".to_vec(),
        };
        let bytes = invite.encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("INVITE sip:447700900123@127.0.0.1:5060 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("P-Asserted-Identity: <sip:441000@127.0.0.1>\r\n"),
            "{text}"
        );
        assert!(text.contains("X-Campaign: spring\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        let Incoming::Request(r) = parse(&bytes).unwrap() else {
            panic!("a request");
        };
        assert_eq!(
            (r.method.as_str(), r.call_id.as_str()),
            ("INVITE", "c1@127.0.0.1")
        );
        let answered = String::from_utf8(answer(&r, 200, "OK")).unwrap();
        assert!(
            answered.starts_with(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1;rport\r\n"
            ),
            "{answered}"
        );
    }

    #[test]
    fn extra_headers_cannot_inject_or_override() {
        assert!(check_extra_header("X-Campaign", "spring 2027").is_ok());
        assert!(check_extra_header("X-A", "v\r\nVia: evil").is_err());
        assert!(check_extra_header("X-A", "v\nBYE").is_err());
        assert!(check_extra_header("X A", "v").is_err());
        assert!(check_extra_header("X-A:", "v").is_err());
        assert!(check_extra_header("Via", "v").is_err());
        assert!(check_extra_header("call-id", "v").is_err());
        assert!(check_extra_header("X-A", &"a".repeat(257)).is_err());
    }

    #[test]
    fn hostile_datagrams_are_errors_never_panics() {
        assert!(matches!(
            parse(&[0u8; 20_000]),
            Err(SipError::TooLarge(20_000))
        ));
        for garbage in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"SIP/2.0 999999999999 X\r\n\r\n",
            b"SIP/2.0 180 Ringing\r\nVia: x\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\n\r\n",
        ] {
            assert!(parse(garbage).is_err(), "{garbage:?}");
        }
        let huge_header = format!(
            "SIP/2.0 180 Ringing\r\nX-Big: {}\r\n\r\n",
            "a".repeat(15_000)
        );
        assert!(parse(huge_header.as_bytes()).is_err());
    }
}
