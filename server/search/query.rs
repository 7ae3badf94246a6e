//! A QIDO-RS request parsed into a [`Query`] (PS3.18 8.3.4, 10.6.1; PS3.4 C.2.2.2). Every
//! refusal is a 400 naming the parameter, decided here, before any index is touched.

use dicom_core::dictionary::{DataDictionary, TagRange};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::matcher::{self, Pattern};
use crate::dicom::attrs;
use crate::error::{Error, Result};
use crate::http::query::QueryParams;

/// The information-model level of a search, or of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Study,
    Series,
    Instance,
}

pub const MODALITIES_IN_STUDY: Tag = Tag(0x0008, 0x0061);
pub const STUDY_RELATED_SERIES: Tag = Tag(0x0020, 0x1206);
pub const STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);
pub const SERIES_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1209);
pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
const STUDY_TIME: Tag = Tag(0x0008, 0x0030);
const PPS_DATE: Tag = Tag(0x0040, 0x0244);
const PPS_TIME: Tag = Tag(0x0040, 0x0245);

/// Attributes the index computes rather than copies.
const STUDY_COMPUTED: &[Tag] = &[
    MODALITIES_IN_STUDY,
    STUDY_RELATED_SERIES,
    STUDY_RELATED_INSTANCES,
];
const SERIES_COMPUTED: &[Tag] = &[SERIES_RELATED_INSTANCES];

/// The level whose index holds `tag` (copied or computed), if any.
pub fn indexed_level(tag: Tag) -> Option<Level> {
    if tag == SPECIFIC_CHARACTER_SET {
        return None;
    }
    if attrs::STUDY.contains(&tag) || STUDY_COMPUTED.contains(&tag) {
        Some(Level::Study)
    } else if attrs::SERIES.contains(&tag) || SERIES_COMPUTED.contains(&tag) {
        Some(Level::Series)
    } else if attrs::INSTANCE.contains(&tag) {
        Some(Level::Instance)
    } else {
        None
    }
}

/// The dictionary VR of a tag (UN when unknown).
pub fn vr_of(tag: Tag) -> VR {
    match tag {
        MODALITIES_IN_STUDY => VR::CS,
        STUDY_RELATED_SERIES | STUDY_RELATED_INSTANCES | SERIES_RELATED_INSTANCES => VR::IS,
        _ => StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.vr.relaxed())
            .unwrap_or(VR::UN),
    }
}

/// An attribute named in a request: a path of one tag, or into a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub path: Vec<Tag>,
    /// VR of the last tag of the path.
    pub vr: VR,
    /// Level of the first tag of the path.
    pub level: Level,
}

impl Attr {
    pub fn tag(&self) -> Tag {
        self.path[0]
    }
}

/// Parses one `{attributeID}` element: a keyword or 8 hex digits.
fn parse_tag(s: &str) -> Option<Tag> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&s[..4], 16).ok()?;
        let e = u16::from_str_radix(&s[4..], 16).ok()?;
        return Some(Tag(g, e));
    }
    let entry = StandardDataDictionary.by_name(s)?;
    match entry.tag {
        TagRange::Single(t) => Some(t),
        _ => None,
    }
}

/// Parses an attribute reference (`PatientName`, `00100010`,
/// `RequestAttributesSequence.ScheduledProcedureStepID`, `00400275.00400009`).
fn parse_attr(name: &str, what: &str) -> Result<(Vec<Tag>, VR)> {
    let bad = |why: &str| Error::BadRequest(format!("{what} '{name}': {why}"));
    let mut path = Vec::new();
    for part in name.split('.') {
        let tag = parse_tag(part).ok_or_else(|| {
            bad("not a DICOM keyword or an 8-digit hexadecimal tag (keywords are case-sensitive)")
        })?;
        if tag.group() % 2 == 1 {
            return Err(bad(
                "private attributes are not indexed and cannot be searched on; \
                 an includefield of a private attribute must list its private creator element too",
            ));
        }
        if tag.element() == 0 {
            return Err(bad("group lengths are not attributes"));
        }
        path.push(tag);
    }
    for t in &path[..path.len() - 1] {
        if vr_of(*t) != VR::SQ {
            return Err(bad(&format!("{t} is not a sequence")));
        }
    }
    let vr = vr_of(*path.last().expect("non-empty"));
    if path.len() == 1 && vr == VR::SQ {
        // A sequence on its own: universal matching only.
    }
    Ok((path, vr))
}

/// What one matching key tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Empty value: every entity matches; the attribute is returned.
    Universal,
    /// UI: any of these UIDs.
    Uids(Vec<String>),
    /// Strings: any of these patterns (one unless a list key). `folded` for PN when
    /// case-insensitive: patterns are folded and values are folded before comparing.
    Text {
        patterns: Vec<Pattern>,
        folded: bool,
    },
    /// PN with `fuzzymatching=true`: every token must match some name component by prefix.
    Fuzzy(Vec<Pattern>),
    /// DA (YYYYMMDD), TM (microseconds) or DT ([`matcher::dt_key`]) inclusive range.
    Range { lo: u64, hi: u64 },
    /// IS: numeric equality.
    Int(i64),
    /// DS: numeric equality.
    Decimal(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub attr: Attr,
    pub test: Test,
}

/// StudyDate + StudyTime (or PPS start date + time) as one datetime range (PS3.4 C.2.2.2.5.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    pub level: Level,
    pub date: Tag,
    pub time: Tag,
    /// Date bounds YYYYMMDD (0 / u32::MAX when open).
    pub date_lo: u32,
    pub date_hi: u32,
    /// [`matcher::dt_key`] bounds.
    pub lo: u64,
    pub hi: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Include {
    /// Only the required attributes and the matching keys, plus these.
    Tags(Vec<Tag>),
    /// Every attribute the index holds.
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub level: Level,
    pub predicates: Vec<Predicate>,
    pub combined: Vec<Combined>,
    /// Top-level tags of the matching keys sent (returned in each result).
    pub keys: Vec<Tag>,
    pub include: Include,
    /// `orderby` keys, `true` when descending.
    pub order: Vec<(Attr, bool)>,
    pub limit: usize,
    pub offset: usize,
    pub fuzzy: bool,
}

/// Search settings from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_results: usize,
    pub case_sensitive_pn: bool,
}

const RESERVED: &[&str] = &[
    "accept",
    "charset",
    "includefield",
    "fuzzymatching",
    "limit",
    "offset",
    "orderby",
];

fn bad(param: &str, why: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("query parameter '{param}': {why}"))
}

fn has_wildcard(v: &str) -> bool {
    v.contains(['*', '?'])
}

/// Splits a list value on `,` and `\`.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split([',', '\\'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `a-b`, `a-`, `-b` or a single value `a` (lo = hi).
fn split_range<'a>(param: &str, v: &'a str) -> Result<(Option<&'a str>, Option<&'a str>, bool)> {
    match v.split_once('-') {
        None => Ok((Some(v), Some(v), false)),
        Some((a, b)) => {
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() && b.is_empty() {
                return Err(bad(param, "a range needs at least one bound ('-' alone)"));
            }
            if b.contains('-') {
                return Err(bad(param, "a range has one '-'"));
            }
            Ok((
                (!a.is_empty()).then_some(a),
                (!b.is_empty()).then_some(b),
                true,
            ))
        }
    }
}

/// Parses a temporal value or range into inclusive bounds.
fn temporal(param: &str, vr: VR, v: &str, allow_reversed: bool) -> Result<(u64, u64, bool)> {
    if has_wildcard(v) {
        return Err(bad(
            param,
            format!("wildcards are not allowed on {vr:?} values"),
        ));
    }
    let (a, b, is_range) = split_range(param, v)?;
    let parse = |s: &str| -> Result<(u64, u64)> {
        let r = match vr {
            VR::DA => matcher::parse_date(s).map(|d| (u64::from(d), u64::from(d))),
            VR::TM => matcher::parse_time(s),
            _ => matcher::parse_datetime(s),
        };
        r.ok_or_else(|| {
            bad(
                param,
                match vr {
                    VR::DA => format!("'{s}' is not a date YYYYMMDD"),
                    VR::TM => format!("'{s}' is not a time HHMMSS.FFFFFF"),
                    _ => format!("'{s}' is not a datetime YYYYMMDDHHMMSS.FFFFFF"),
                },
            )
        })
    };
    let lo = a.map(parse).transpose()?.map_or(0, |(lo, _)| lo);
    let hi = b.map(parse).transpose()?.map_or(u64::MAX, |(_, hi)| hi);
    if lo > hi && !allow_reversed {
        return Err(bad(param, "the range starts after it ends"));
    }
    Ok((lo, hi, is_range))
}

fn is_pn(vr: VR) -> bool {
    vr == VR::PN
}

fn is_string(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::UC
            | VR::UT
            | VR::UR
    )
}

/// Trims what PN values carry as padding: spaces and trailing empty components.
fn trim_pn(v: &str) -> String {
    v.split('=')
        .map(|g| g.trim().trim_end_matches('^').trim_end())
        .collect::<Vec<_>>()
        .join("=")
        .trim_end_matches('=')
        .to_owned()
}

/// `in_combined`: the key is the time half of a combined date-time range, where `2300-0100`
/// is a valid bound pair (it spans midnight).
fn parse_test(
    param: &str,
    attr: &Attr,
    value: &str,
    fuzzy: bool,
    in_combined: bool,
    s: &Settings,
) -> Result<Test> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Test::Universal);
    }
    let vr = attr.vr;
    let list_key =
        matches!(attr.tag(), Tag(0x0008, 0x0060) | MODALITIES_IN_STUDY) && attr.path.len() == 1;
    match vr {
        VR::UI => {
            if has_wildcard(value) {
                return Err(bad(param, "wildcards are not allowed on UIDs"));
            }
            let uids: Vec<String> = list(value).map(str::to_owned).collect();
            for u in &uids {
                if u.len() > 64 || !u.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(bad(param, format!("'{u}' is not a UID")));
                }
            }
            Ok(Test::Uids(uids))
        }
        VR::DA | VR::TM | VR::DT => {
            let (lo, hi, _) = temporal(param, vr, value, in_combined && vr == VR::TM)?;
            Ok(Test::Range { lo, hi })
        }
        VR::IS | VR::SL | VR::SS | VR::UL | VR::US | VR::SV | VR::UV => {
            if has_wildcard(value) {
                return Err(bad(param, "wildcards are not allowed on numbers"));
            }
            value
                .parse::<i64>()
                .map(Test::Int)
                .map_err(|_| bad(param, format!("'{value}' is not an integer")))
        }
        VR::DS | VR::FL | VR::FD => {
            if has_wildcard(value) {
                return Err(bad(param, "wildcards are not allowed on numbers"));
            }
            value
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Test::Decimal)
                .ok_or_else(|| bad(param, format!("'{value}' is not a decimal number")))
        }
        VR::SQ => Err(bad(
            param,
            "a sequence matches only with an empty value; name an attribute inside it \
             (e.g. 00400275.00400009)",
        )),
        _ if is_pn(vr) => {
            let folded = !s.case_sensitive_pn;
            if fuzzy {
                let tokens: Vec<Pattern> = value
                    .split([' ', '^', '='])
                    .filter(|t| !t.is_empty())
                    .map(|t| Pattern::new(&format!("{}*", matcher::fold(t))))
                    .collect();
                return Ok(Test::Fuzzy(tokens));
            }
            let v = trim_pn(value);
            let v = if folded { matcher::fold(&v) } else { v };
            Ok(Test::Text {
                patterns: vec![Pattern::new(&v)],
                folded,
            })
        }
        _ if is_string(vr) => {
            let patterns = if list_key {
                list(value).map(Pattern::new).collect()
            } else {
                vec![Pattern::new(value)]
            };
            Ok(Test::Text {
                patterns,
                folded: false,
            })
        }
        _ => Err(bad(
            param,
            format!("attributes of VR {vr:?} cannot be used as matching keys"),
        )),
    }
}

/// Parses the request of a search at `level`.
pub fn parse(params: &QueryParams, level: Level, s: &Settings) -> Result<Query> {
    let fuzzy = match params.get("fuzzymatching") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(
                "fuzzymatching",
                format!("'{other}' is not 'true' or 'false'"),
            ));
        }
    };
    if params.get_all("fuzzymatching").count() > 1 {
        return Err(bad("fuzzymatching", "given more than once"));
    }
    let number = |name: &str| -> Result<Option<usize>> {
        let mut values = params.get_all(name);
        let v = values.next();
        if values.next().is_some() {
            return Err(bad(name, "given more than once"));
        }
        v.map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| bad(name, format!("'{v}' is not a non-negative integer")))
        })
        .transpose()
    };
    let limit = number("limit")?.unwrap_or(s.max_results).min(s.max_results);
    let offset = number("offset")?.unwrap_or(0);

    let mut include_all = false;
    let mut include = Vec::new();
    for v in params.get_all("includefield") {
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                include_all = true;
                continue;
            }
            include.extend(parse_include(name)?);
        }
    }
    if include_all && !include.is_empty() {
        return Err(bad(
            "includefield",
            "'all' cannot be combined with other includefield values",
        ));
    }

    let mut order = Vec::new();
    for v in params.get_all("orderby") {
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (desc, name) = match name.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, name.strip_prefix('+').unwrap_or(name)),
            };
            let (path, vr) = parse_attr(name, "orderby key")?;
            if path.len() > 1 {
                return Err(bad(
                    "orderby",
                    "cannot order by an attribute inside a sequence",
                ));
            }
            let attr_level = indexed_level(path[0])
                .filter(|l| *l <= level)
                .ok_or_else(|| {
                    bad(
                        "orderby",
                        format!("'{name}' is not an indexed attribute at this level"),
                    )
                })?;
            order.push((
                Attr {
                    path,
                    vr,
                    level: attr_level,
                },
                desc,
            ));
        }
    }

    // Date and time both given as ranges combine into one datetime range.
    let is_range = |t: Tag| {
        params
            .iter()
            .any(|(n, v)| parse_tag(n) == Some(t) && v.contains('-'))
    };
    let pairs: Vec<(Tag, Tag)> = [(STUDY_DATE, STUDY_TIME), (PPS_DATE, PPS_TIME)]
        .into_iter()
        .filter(|(d, t)| is_range(*d) && is_range(*t))
        .collect();
    let mut predicates: Vec<Predicate> = Vec::new();
    let mut keys = Vec::new();
    let mut seen: Vec<Vec<Tag>> = Vec::new();
    for (name, value) in params.iter() {
        if RESERVED.contains(&name) {
            continue;
        }
        let (path, vr) = parse_attr(name, "query parameter")?;
        // The same attribute twice, by name or by tag, is ambiguous.
        if seen.contains(&path) {
            return Err(bad(name, "the same attribute is given more than once"));
        }
        seen.push(path.clone());
        let tag = path[0];
        let attr_level = match indexed_level(tag) {
            Some(l) if l <= level => l,
            Some(l) => {
                return Err(bad(
                    name,
                    format!(
                        "a {} attribute cannot be a matching key of a {} search{}",
                        level_name(l),
                        level_name(level),
                        if tag == Tag(0x0008, 0x0060) {
                            " (use ModalitiesInStudy)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            None => {
                return Err(bad(
                    name,
                    "not an attribute Lightbox indexes, so it cannot be searched on \
                     (use includefield to have it returned)",
                ));
            }
        };
        let attr = Attr {
            path,
            vr,
            level: attr_level,
        };
        let in_combined = pairs.iter().any(|(_, t)| attr.path == [*t]);
        let test = parse_test(name, &attr, value, fuzzy && is_pn(vr), in_combined, s)?;
        if !keys.contains(&tag) {
            keys.push(tag);
        }
        predicates.push(Predicate { attr, test });
    }

    let mut combined = Vec::new();
    for (date, time) in pairs {
        let find = |t: Tag| {
            predicates
                .iter()
                .position(|p| p.attr.path == [t])
                .expect("parsed above")
        };
        let (di, ti) = (find(date), find(time));
        let (Test::Range { lo: dlo, hi: dhi }, Test::Range { lo: tlo, hi: thi }) =
            (&predicates[di].test, &predicates[ti].test)
        else {
            continue;
        };
        let date_lo = u32::try_from(*dlo).unwrap_or(0);
        let date_hi = u32::try_from(*dhi).unwrap_or(u32::MAX);
        let lo = if *dlo == 0 {
            0
        } else {
            matcher::dt_key(date_lo, if *tlo == 0 { 0 } else { *tlo })
        };
        let hi = if *dhi == u64::MAX {
            u64::MAX
        } else {
            matcher::dt_key(date_hi, (*thi).min(86_400_000_000 - 1))
        };
        let level = predicates[di].attr.level;
        // Replace the two separate tests by the combined one.
        for i in [di.max(ti), di.min(ti)] {
            predicates.remove(i);
        }
        combined.push(Combined {
            level,
            date,
            time,
            date_lo,
            date_hi,
            lo,
            hi,
        });
    }

    Ok(Query {
        level,
        predicates,
        combined,
        keys,
        include: if include_all {
            Include::All
        } else {
            Include::Tags(include)
        },
        order,
        limit,
        offset,
        fuzzy,
    })
}

/// One `includefield` name: a keyword or tag. A private element (odd group, element
/// 0x1000-0xFFFF) must come with its creator (gggg,00xx) — DICOM's own rule for private keys.
fn parse_include(name: &str) -> Result<Vec<Tag>> {
    let tag = parse_tag(name).ok_or_else(|| {
        bad(
            "includefield",
            format!(
                "'{name}' is not a DICOM keyword or an 8-digit hexadecimal tag (keywords are case-sensitive)"
            ),
        )
    })?;
    if tag.element() == 0 {
        return Err(bad(
            "includefield",
            format!("'{name}' is a group length, not an attribute"),
        ));
    }
    Ok(vec![tag])
}

/// Checks that every private element in `includefield` has its creator listed too.
pub fn check_private_creators(include: &Include) -> Result<()> {
    let Include::Tags(tags) = include else {
        return Ok(());
    };
    for t in tags {
        if t.group() % 2 == 1 && t.element() >= 0x1000 {
            let creator = Tag(t.group(), t.element() >> 8);
            if !tags.contains(&creator) {
                return Err(bad(
                    "includefield",
                    format!(
                        "private attribute {t} needs its private creator ({:04X}{:04X}) in includefield too",
                        creator.group(),
                        creator.element()
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub fn level_name(l: Level) -> &'static str {
    match l {
        Level::Study => "study",
        Level::Series => "series",
        Level::Instance => "instance",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str, level: Level) -> Result<Query> {
        parse(
            &QueryParams::parse(raw).unwrap(),
            level,
            &Settings {
                max_results: 100,
                case_sensitive_pn: false,
            },
        )
    }

    fn err(raw: &str, level: Level) -> String {
        match q(raw, level) {
            Err(Error::BadRequest(m)) => m,
            other => panic!("{raw}: expected 400, got {other:?}"),
        }
    }

    #[test]
    fn keys_by_keyword_tag_and_path() {
        let a = q(
            "PatientName=DOE*&00100020=X&00400275.00400009=S1",
            Level::Series,
        )
        .unwrap();
        assert_eq!(a.predicates.len(), 3);
        assert_eq!(
            a.predicates[2].attr.path,
            [Tag(0x0040, 0x0275), Tag(0x0040, 0x0009)]
        );
        assert_eq!(a.predicates[0].attr.level, Level::Study);
        let b = q(
            "RequestAttributesSequence.ScheduledProcedureStepID=S1",
            Level::Series,
        )
        .unwrap();
        assert_eq!(b.predicates[0].attr.path, a.predicates[2].attr.path);
    }

    #[test]
    fn refusals_name_the_parameter() {
        assert!(err("Foo=1", Level::Study).contains("'Foo'"));
        assert!(err("patientname=x", Level::Study).contains("patientname"));
        assert!(err("Modality=CT", Level::Study).contains("ModalitiesInStudy"));
        assert!(err("00091010=x", Level::Study).contains("private"));
        assert!(err("StudyDate=-", Level::Study).contains("StudyDate"));
        assert!(err("StudyDate=20200102-20200101", Level::Study).contains("starts after"));
        assert!(err("StudyDate=2020-01-01", Level::Study).contains("StudyDate"));
        assert!(err("StudyDate=2020*", Level::Study).contains("wildcards"));
        assert!(err("StudyInstanceUID=1.2*", Level::Study).contains("wildcards"));
        assert!(err("SeriesNumber=1*", Level::Series).contains("wildcards"));
        assert!(err("limit=-1", Level::Study).contains("limit"));
        assert!(err("offset=x", Level::Study).contains("offset"));
        assert!(err("fuzzymatching=yes", Level::Study).contains("fuzzymatching"));
        assert!(err("includefield=all&includefield=00081030", Level::Study).contains("all"));
        assert!(err("PatientID=1&PatientID=2", Level::Study).contains("more than once"));
        assert!(err("PatientID=1&00100020=2", Level::Study).contains("'00100020'"));
        assert!(err("KVP=120", Level::Instance).contains("KVP"));
        assert!(err("includefield=NoSuchThing", Level::Study).contains("NoSuchThing"));
    }

    #[test]
    fn limit_is_clamped_and_dates_combine() {
        assert_eq!(q("limit=5000", Level::Study).unwrap().limit, 100);
        assert_eq!(q("", Level::Study).unwrap().limit, 100);
        let c = q(
            "StudyDate=20200101-20200102&StudyTime=2300-0100",
            Level::Study,
        )
        .unwrap();
        assert!(c.predicates.is_empty());
        assert_eq!(c.combined.len(), 1);
        let k = |d, t| matcher::dt_key(d, t);
        assert_eq!(c.combined[0].lo, k(20200101, 23 * 3_600_000_000));
        assert_eq!(c.combined[0].hi, k(20200102, 3_660_000_000 - 1));
        // A single date with a time range stays two separate tests.
        let d = q("StudyDate=20200101&StudyTime=10-12", Level::Study).unwrap();
        assert_eq!(d.predicates.len(), 2);
    }

    #[test]
    fn lists_and_pn() {
        let m = q("ModalitiesInStudy=CT,MR", Level::Study).unwrap();
        assert!(
            matches!(&m.predicates[0].test, Test::Text { patterns, .. } if patterns.len() == 2)
        );
        let u = q("StudyInstanceUID=1.2,1.3\\1.4", Level::Study).unwrap();
        assert_eq!(
            u.predicates[0].test,
            Test::Uids(vec!["1.2".into(), "1.3".into(), "1.4".into()])
        );
        let p = q("PatientName=m%C3%BCller^hans^^", Level::Study).unwrap();
        assert!(
            matches!(&p.predicates[0].test, Test::Text { patterns, folded: true } if patterns[0].text == "MULLER^HANS")
        );
    }
}
