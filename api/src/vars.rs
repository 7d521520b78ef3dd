//! Request variables (API.md §1): from the query string and the body (urlencoded form,
//! multipart with file uploads, or a JSON object), the body winning over the query string; list
//! variables written `a=1,2`, `a[]=1&a[]=2` or `a=1&a=2`.

use crate::error::ApiError;
use bytes::Bytes;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::str::FromStr;

/// At most this many variables (values, counting list items) are read from one request.
const MAX_VALUES: usize = 10_000;

/// Numbers per request for the lookups and rate queries (`lookup/ping` and `dial/dial` take
/// fewer: they place calls).
pub const MAX_NUMBERS: usize = 1_000;

/// What a yes/no variable may be (see [`Vars::flag`]).
pub const FLAG_VALUES: [&str; 6] = ["true", "false", "1", "0", "yes", "no"];
/// The deepest a paged listing reaches (`offset`); past it, narrow the range instead.
pub const MAX_OFFSET: usize = 10_000_000;

/// The variables of one request, and its body when the body is not variables (a deck).
#[derive(Debug, Default)]
pub struct Vars {
    /// Every variable's name and value, in the order given, as places in `text`: a rate query's
    /// three variables are two allocations, not a map of strings (nine, and hashing, in every
    /// query's profile). Lookups scan: a request holds at most [`MAX_VALUES`].
    entries: Vec<Entry>,
    /// The names and values, one after another.
    text: String,
    /// How many values `entries` holds in all (a name given without a value counts none).
    count: usize,
    files: HashMap<String, Bytes>,
    /// The body, when it was not variables (e.g. `text/csv`, or an IME JSON document).
    raw_body: Option<Bytes>,
}

/// One variable given: its name and its value (none for a JSON `null` or empty list, still a
/// name the request gave).
#[derive(Debug)]
struct Entry {
    name: Range<usize>,
    value: Option<Range<usize>>,
}

impl Vars {
    /// Reads the query string and the body.
    pub async fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Self, ApiError> {
        let mut vars = Self::from_query(query)?;
        vars.add_body(content_type, body).await?;
        Ok(vars)
    }

    /// The variables of the query string alone (read before the body, to authenticate).
    pub fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut vars = Vars::default();
        if let Some(q) = query {
            vars.text.reserve(q.len());
            vars.add_pairs(query_pairs(q))?;
        }
        Ok(vars)
    }

    /// Adds the body's variables (winning over the query string's), or keeps the body raw when
    /// it is not variables.
    pub async fn add_body(
        &mut self,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(), ApiError> {
        let mut from_body = Vars::default();
        let media = content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        match media.as_deref() {
            _ if body.is_empty() => {}
            Some("application/x-www-form-urlencoded") => {
                from_body.add_pairs(form_urlencoded::parse(&body))?
            }
            Some("multipart/form-data") => {
                from_body
                    .add_multipart(content_type.unwrap_or(""), body)
                    .await?
            }
            Some("application/json") => from_body.add_json(body)?,
            _ => from_body.raw_body = Some(body),
        }
        if !from_body.entries.is_empty() {
            // A name the body gives replaces the query string's values of it.
            let given: HashSet<&str, foldhash::fast::RandomState> = from_body
                .entries
                .iter()
                .map(|e| from_body.name(e))
                .collect();
            let text = &self.text;
            self.entries
                .retain(|e| !given.contains(&text[e.name.clone()]));
            self.count = self.entries.iter().filter(|e| e.value.is_some()).count();
            for entry in &from_body.entries {
                let name = self.put(from_body.name(entry));
                let value = entry.value.clone().map(|v| self.put(&from_body.text[v]));
                self.count += usize::from(value.is_some());
                self.entries.push(Entry { name, value });
            }
        }
        if self.count > MAX_VALUES {
            return Err(too_many_values());
        }
        self.files = from_body.files;
        self.raw_body = from_body.raw_body;
        Ok(())
    }

    /// The first variable (by name) that `known` does not accept: a typo or a newer client's
    /// variable is refused, never silently ignored (API.md §1).
    pub fn first_unknown(&self, known: impl Fn(&str) -> bool) -> Option<&str> {
        self.entries
            .iter()
            .map(|e| self.name(e))
            .chain(self.files.keys().map(String::as_str))
            .filter(|name| !known(name))
            .min()
    }

    /// Variables from name/value pairs (for tests and internal callers).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut vars = Vars::default();
        for (k, v) in pairs {
            vars.push(k, v);
        }
        vars
    }

    fn name(&self, entry: &Entry) -> &str {
        &self.text[entry.name.clone()]
    }

    /// The values given for `name`, in order, as given.
    fn raw<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |e| self.name(e) == name)
            .filter_map(|e| e.value.clone().map(|v| &self.text[v]))
    }

    /// Appends `s` to the text; where it is.
    fn put(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    fn push(&mut self, name: &str, value: &str) {
        let name = self.put(name.strip_suffix("[]").unwrap_or(name));
        let value = Some(self.put(value));
        self.entries.push(Entry { name, value });
        self.count += 1;
    }

    /// Notes that `name` was given, with no value.
    fn push_name(&mut self, name: &str) {
        let name = self.put(name.strip_suffix("[]").unwrap_or(name));
        self.entries.push(Entry { name, value: None });
    }

    fn add_pairs<'a>(
        &mut self,
        pairs: impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
    ) -> Result<(), ApiError> {
        for (k, v) in pairs {
            self.push(&k, &v);
            if self.count > MAX_VALUES {
                return Err(too_many_values());
            }
        }
        Ok(())
    }

    fn add_json(&mut self, body: Bytes) -> Result<(), ApiError> {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let map = match value {
            Value::Object(map) => map,
            Value::Array(_) => {
                // A list of records (e.g. the CDRs of `cdr/add`): the body itself, no variables.
                self.raw_body = Some(body);
                return Ok(());
            }
            _ => {
                return Err(ApiError::bad_request(
                    "a JSON body must be an object of variables",
                ))
            }
        };
        if map.contains_key("schema_version") && map.contains_key("cards") {
            // An IME rate card sent as the body of an import.
            self.raw_body = Some(body);
            return Ok(());
        }
        for (name, value) in map {
            match value {
                // Recorded even when null or empty, so an unknown name is still seen.
                Value::Array(items) if items.is_empty() => self.push_name(&name),
                Value::Array(items) => {
                    for item in items {
                        // An object in a list (an entry of `ratecard/build`'s `profit`) is
                        // kept as its JSON text.
                        let text = match item {
                            Value::Object(_) => item.to_string(),
                            other => scalar(&name, other)?,
                        };
                        self.push(&name, &text);
                    }
                }
                Value::Null => self.push_name(&name),
                other => {
                    let text = scalar(&name, other)?;
                    self.push(&name, &text);
                }
            }
            if self.count > MAX_VALUES {
                return Err(too_many_values());
            }
        }
        Ok(())
    }

    async fn add_multipart(&mut self, content_type: &str, body: Bytes) -> Result<(), ApiError> {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|_| ApiError::bad_request("multipart body without a boundary"))?;
        let stream =
            futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let bad = |_| ApiError::bad_request("malformed multipart body");
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            if field.file_name().is_some() {
                let data = field.bytes().await.map_err(bad)?;
                self.files
                    .insert(name.strip_suffix("[]").unwrap_or(&name).to_owned(), data);
            } else {
                let text = field.text().await.map_err(bad)?;
                self.push(&name, &text);
            }
            if self.count + self.files.len() > MAX_VALUES {
                return Err(too_many_values());
            }
        }
        Ok(())
    }

    /// The variable's value (the first, if given several times); empty counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).map(str::trim).find(|s| !s.is_empty())
    }

    /// The variable's value, or a 400 naming it.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// Every value given for `name`, as given (no comma split), empties dropped.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.raw(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Every value of a list variable, comma lists split, empties dropped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.raw(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A parsed optional variable; a value that does not parse is a 400 naming it.
    pub fn parse_opt<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|s| {
                s.parse::<T>()
                    .map_err(|_| ApiError::invalid(name, format!("'{s}' is not {what}")))
            })
            .transpose()
    }

    /// A revision number (revisions are numbered from 1).
    pub fn revision(&self, name: &str) -> Result<Option<u32>, ApiError> {
        match self.parse_opt::<u32>(name, "a revision number")? {
            Some(0) => Err(ApiError::invalid(name, "revisions are numbered from 1")),
            rev => Ok(rev),
        }
    }

    /// A final SIP response code, 100-699.
    pub fn sip_code(&self, name: &str) -> Result<Option<u16>, ApiError> {
        match self.parse_opt::<u16>(name, "a SIP response code")? {
            Some(code) if !(100..=699).contains(&code) => Err(ApiError::invalid(
                name,
                format!("{code} is not a SIP response code (100-699)"),
            )),
            code => Ok(code),
        }
    }

    /// A variable that must be one of `choices`, if given.
    pub fn choice<'c>(&self, name: &str, choices: &[&'c str]) -> Result<Option<&'c str>, ApiError> {
        let Some(given) = self.get(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| **c == given)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                let (last, rest) = choices.split_last().unwrap_or((&"", &[]));
                let listed = if rest.is_empty() {
                    (*last).to_owned()
                } else {
                    format!("{} or {last}", rest.join(", "))
                };
                ApiError::invalid(name, format!("'{given}' is not {listed}"))
            })
    }

    /// A yes/no variable: `true`, `1`, `yes` or `false`, `0`, `no` ([`FLAG_VALUES`]).
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("'{other}' is not true or false"),
            )),
        }
    }

    /// A time variable (unix seconds or `YYYY-MM-DD HH:MM:SS` UTC); a value that does not
    /// parse is a 400 naming it.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|s| {
                edgerate_model::time::parse(s).ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        format!("'{s}' is not unix seconds or 'YYYY-MM-DD HH:MM:SS'"),
                    )
                })
            })
            .transpose()
    }

    /// A phone number variable, normalised to E.164 digits.
    pub fn number(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.get(name)
            .map(|n| edgerate_model::number::normalise(n).map_err(|e| ApiError::invalid(name, e)))
            .transpose()
    }

    /// A required list of at most `max` phone numbers, normalised (the count is checked before
    /// any is read).
    pub fn numbers(&self, name: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let raw = self.list(name);
        if raw.is_empty() {
            return Err(ApiError::missing(name));
        }
        if raw.len() > max {
            return Err(ApiError::invalid(
                name,
                format!("at most {max} numbers per request, {} given", raw.len()),
            ));
        }
        let mut numbers: Vec<String> = Vec::with_capacity(raw.len());
        for n in raw {
            let n = edgerate_model::number::normalise(n).map_err(|e| ApiError::invalid(name, e))?;
            // One answer per number: a number given twice (in any form) is asked once.
            if !numbers.contains(&n) {
                numbers.push(n);
            }
        }
        Ok(numbers)
    }

    /// `limit` (1..=`max`, default `default`) and `offset` (default 0) of a paged listing.
    pub fn page(&self, default: usize, max: usize) -> Result<(usize, usize), ApiError> {
        let limit = self
            .parse_opt::<usize>("limit", "a whole number")?
            .unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(ApiError::invalid("limit", format!("must be 1-{max}")));
        }
        let offset = self
            .parse_opt::<usize>("offset", "a whole number")?
            .unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(ApiError::invalid(
                "offset",
                format!("must be 0-{MAX_OFFSET}"),
            ));
        }
        Ok((limit, offset))
    }

    /// An uploaded file: a multipart file field, else a text variable of that name.
    pub fn file(&self, name: &str) -> Option<Bytes> {
        if let Some(file) = self.files.get(name) {
            return Some(file.clone());
        }
        self.raw(name)
            .next()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
    }

    /// The body, when it was not variables.
    pub fn raw_body(&self) -> Option<&Bytes> {
        self.raw_body.as_ref()
    }

    /// True when `name` was given at all (even empty).
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| self.name(e) == name)
    }

    /// Every variable whose name starts with `prefix`, as (name, first value), by name.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(&str, &str)> {
        // One pass (a lookup per name would scan every variable for each).
        let mut found: BTreeMap<&str, &str> = BTreeMap::new();
        for entry in &self.entries {
            let name = self.name(entry);
            if !name.starts_with(prefix) {
                continue;
            }
            let value = entry.value.clone().map_or("", |v| self.text[v].trim());
            let first = found.entry(name).or_insert("");
            if first.is_empty() {
                *first = value;
            }
        }
        found.into_iter().collect()
    }
}

/// A query string's name/value pairs, read as `form_urlencoded::parse` reads them; a pair with
/// nothing to decode (no `%` or `+`) is borrowed as it is, with no pass to decode it or to check
/// its UTF-8 (the query is text already): a rate query's pairs in every request's profile.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            if pair.bytes().any(|b| b == b'%' || b == b'+') {
                // One pair (no `&`): form_urlencoded reads it as exactly one.
                if let Some(decoded) = form_urlencoded::parse(pair.as_bytes()).next() {
                    return decoded;
                }
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (Cow::Borrowed(name), Cow::Borrowed(value))
        })
}

fn too_many_values() -> ApiError {
    ApiError::bad_request(format!("too many variables (more than {MAX_VALUES})"))
}

fn scalar(name: &str, value: Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ApiError::invalid(
            name,
            "must be a string, number or boolean",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_string_reads_as_form_urlencoded_reads_it() {
        for query in [
            "card=demo&number=441234567890&duration=61",
            "a=1&&b&=c&d==e&",
            "name=a+b%20c&%6Eumber=%34%34&bad=%ff%zz&plus+key=1",
            "x=%E2%82%AC&y=\u{20ac}&z=%",
            "",
        ] {
            let ours: Vec<_> = query_pairs(query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            assert_eq!(ours, theirs, "{query}");
        }
    }

    #[tokio::test]
    async fn three_list_syntaxes() {
        let vars = Vars::parse(Some("number=1,2&number[]=3&number=4"), None, Bytes::new())
            .await
            .unwrap();
        assert_eq!(vars.list("number"), ["1", "2", "3", "4"]);
    }

    #[tokio::test]
    async fn body_wins_over_query() {
        let body = Bytes::from_static(b"card=b&duration=7");
        let vars = Vars::parse(
            Some("card=a&number=1"),
            Some("application/x-www-form-urlencoded"),
            body,
        )
        .await
        .unwrap();
        assert_eq!(vars.get("card"), Some("b"));
        assert_eq!(vars.get("number"), Some("1"));
        let json = Bytes::from_static(br#"{"card":"c","number":["1","2"],"duration":61.5}"#);
        let vars = Vars::parse(
            Some("card=a"),
            Some("application/json; charset=utf-8"),
            json,
        )
        .await
        .unwrap();
        assert_eq!(vars.get("card"), Some("c"));
        assert_eq!(vars.list("number"), ["1", "2"]);
        assert_eq!(vars.get("duration"), Some("61.5"));
    }

    #[tokio::test]
    async fn a_name_without_a_value_is_still_given_and_the_body_replaces_every_value() {
        let json = Bytes::from_static(br#"{"cap":null,"tags":[],"number":["3"]}"#);
        let vars = Vars::parse(
            Some("number=1&number=2&card=a"),
            Some("application/json"),
            json,
        )
        .await
        .unwrap();
        assert!(vars.has("cap") && vars.has("tags"));
        assert_eq!((vars.get("cap"), vars.list("tags").len()), (None, 0));
        assert_eq!(vars.list("number"), ["3"]);
        assert_eq!(vars.get("card"), Some("a"));
        assert_eq!(
            vars.first_unknown(|n| n != "tags" && n != "cap"),
            Some("cap")
        );
        let many = vec!["n=1"; MAX_VALUES + 1].join("&");
        assert!(Vars::from_query(Some(&many)).is_err());
    }

    #[tokio::test]
    async fn bad_bodies_are_400() {
        for (ct, body) in [
            ("application/json", "{"),
            ("application/json", "1"),
            ("application/json", r#"{"a":{"b":1}}"#),
            ("multipart/form-data", "x"),
        ] {
            let err = Vars::parse(None, Some(ct), Bytes::from(body))
                .await
                .unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::BadRequest, "{ct} {body}");
        }
    }

    #[tokio::test]
    async fn multipart_files_and_fields() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"card\"\r\n\r\nuk\r\n\
                    --XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.csv\"\r\nContent-Type: text/csv\r\n\r\nprefix,name\n1,a\n\r\n--XX--\r\n";
        let vars = Vars::parse(
            None,
            Some("multipart/form-data; boundary=XX"),
            Bytes::from(body),
        )
        .await
        .unwrap();
        assert_eq!(vars.get("card"), Some("uk"));
        assert_eq!(&vars.file("file").unwrap()[..], b"prefix,name\n1,a\n");
    }

    #[tokio::test]
    async fn other_bodies_are_kept_raw() {
        let vars = Vars::parse(
            Some("card=x"),
            Some("text/csv"),
            Bytes::from_static(b"prefix\n1\n"),
        )
        .await
        .unwrap();
        assert_eq!(vars.raw_body().map(|b| &b[..]), Some(&b"prefix\n1\n"[..]));
        assert_eq!(vars.get("card"), Some("x"));
    }
}
