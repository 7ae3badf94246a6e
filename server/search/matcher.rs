//! Value matching for QIDO-RS (PS3.4 C.2.2.2): wildcards, person-name folding, and date, time
//! and datetime ranges. Everything here is linear in the length of the value: wildcards are
//! matched segment by segment (leftmost-first, which is optimal for `*`), never by a
//! backtracking regular expression.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// A `*`/`?` pattern, pre-split at `*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    /// The pattern text (already folded when it applies to folded values).
    pub text: String,
    /// Segments between `*`, each a sequence of chars where `?` matches any one char.
    segments: Vec<Vec<char>>,
    anchored_start: bool,
    anchored_end: bool,
    wild: bool,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        let wild = text.contains(['*', '?']);
        let parts: Vec<&str> = text.split('*').collect();
        Pattern {
            text: text.to_owned(),
            anchored_start: !text.starts_with('*'),
            anchored_end: !text.ends_with('*'),
            segments: parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| p.chars().collect())
                .collect(),
            wild,
        }
    }

    /// True when the pattern holds `*` or `?`.
    pub fn is_wild(&self) -> bool {
        self.wild
    }

    /// True for `*` alone (or `**`): matches anything, including an empty value.
    pub fn is_match_all(&self) -> bool {
        self.wild && self.segments.is_empty()
    }

    /// The literal text before the first wildcard (what an ordered index can range over).
    pub fn literal_prefix(&self) -> &str {
        let end = self.text.find(['*', '?']).unwrap_or(self.text.len());
        &self.text[..end]
    }

    pub fn matches(&self, value: &str) -> bool {
        if !self.wild {
            return self.text == value;
        }
        if self.segments.is_empty() {
            return true;
        }
        // Fast path: `LITERAL*`.
        if self.anchored_start
            && !self.anchored_end
            && self.segments.len() == 1
            && !self.text.contains('?')
        {
            return value.starts_with(self.literal_prefix());
        }
        let v: Vec<char> = value.chars().collect();
        let n = self.segments.len();
        let mut pos = 0usize;
        for (i, seg) in self.segments.iter().enumerate() {
            let first = i == 0 && self.anchored_start;
            let last = i == n - 1 && self.anchored_end;
            if first && last {
                return v.len() == seg.len() && seg_at(seg, &v, 0);
            }
            if first {
                if !seg_at(seg, &v, 0) {
                    return false;
                }
                pos = seg.len();
                continue;
            }
            if last {
                if v.len() < pos + seg.len() {
                    return false;
                }
                return seg_at(seg, &v, v.len() - seg.len());
            }
            match find_seg(seg, &v, pos) {
                Some(at) => pos = at + seg.len(),
                None => return false,
            }
        }
        // The last segment was not anchored at the end: the rest is covered by a `*`.
        true
    }
}

fn seg_at(seg: &[char], v: &[char], at: usize) -> bool {
    v.len() >= at + seg.len() && seg.iter().zip(&v[at..]).all(|(p, c)| *p == '?' || p == c)
}

fn find_seg(seg: &[char], v: &[char], from: usize) -> Option<usize> {
    (from..=v.len().checked_sub(seg.len())?).find(|&at| seg_at(seg, v, at))
}

/// Folds a person name for case- and accent-insensitive matching: compatibility decomposition,
/// combining marks dropped, upper case. `Müller` → `MULLER`; CJK text is unchanged.
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_uppercase)
        .collect()
}

/// A PN value in its stored form (`Alphabetic=Ideographic=Phonetic`, components by `^`), cut
/// into its representations with trailing empty components and padding removed.
pub fn pn_groups(value: &str) -> impl Iterator<Item = &str> {
    value
        .split('=')
        .map(|g| g.trim().trim_end_matches('^').trim_end())
        .filter(|g| !g.is_empty())
}

/// The name components of a PN value in every representation (family, given, middle, prefix,
/// suffix), further split on spaces, for fuzzy matching.
pub fn pn_components(value: &str) -> impl Iterator<Item = &str> {
    pn_groups(value)
        .flat_map(|g| g.split('^'))
        .flat_map(|c| c.split(' '))
        .filter(|c| !c.is_empty())
}

/// Days in a month, for validating dates.
fn days_in(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// A DA value `YYYYMMDD` as the number YYYYMMDD, validated.
pub fn parse_date(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = s.parse().ok()?;
    let (y, m, d) = (n / 10000, n / 100 % 100, n % 100);
    (d >= 1 && d <= days_in(y, m)).then_some(n)
}

/// Stored dates are read leniently (the old `YYYY.MM.DD` form too).
pub fn parse_stored_date(s: &str) -> Option<u32> {
    let s = s.trim();
    parse_date(s).or_else(|| parse_date(&s.replace('.', "")))
}

const MICROS_PER_DAY: u64 = 86_400_000_000;

/// A TM value `HH[MM[SS[.F{1,6}]]]` as microseconds since midnight: the first and the last
/// microsecond it denotes (a partial time covers its whole hour or minute).
pub fn parse_time(s: &str) -> Option<(u64, u64)> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if !whole.bytes().all(|b| b.is_ascii_digit()) || ![2, 4, 6].contains(&whole.len()) {
        return None;
    }
    let num = |i: usize| -> u64 { whole[i..i + 2].parse().unwrap_or(99) };
    let h = num(0);
    let m = if whole.len() >= 4 { num(2) } else { 0 };
    let sec = if whole.len() >= 6 { num(4) } else { 0 };
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let base = ((h * 60 + m) * 60 + sec) * 1_000_000;
    match (whole.len(), frac) {
        (2, None) => Some((base, base + 3_600_000_000 - 1)),
        (4, None) => Some((base, base + 60_000_000 - 1)),
        (6, None) => Some((base, base + 999_999)),
        (6, Some(f)) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let scale = 10u64.pow(6 - f.len() as u32);
            let micros: u64 = f.parse::<u64>().ok()? * scale;
            Some((base + micros, base + micros + scale - 1))
        }
        _ => None,
    }
}

/// Stored times are read leniently (the old `HH:MM:SS` form too).
pub fn parse_stored_time(s: &str) -> Option<(u64, u64)> {
    let s = s.trim();
    parse_time(s).or_else(|| parse_time(&s.replace(':', "")))
}

/// A point in time as one ordered number: the date YYYYMMDD shifted above the microseconds.
pub fn dt_key(date: u32, micros: u64) -> u64 {
    (u64::from(date) << 37) | micros.min(MICROS_PER_DAY - 1)
}

/// A DT value `YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]` as its first and last instant (the time
/// zone suffix is ignored: values compare as written).
pub fn parse_datetime(s: &str) -> Option<(u64, u64)> {
    let s = s.trim();
    let s = s.split(['+', '-']).next().unwrap_or(s);
    let (head, tail) = s.split_at(s.len().min(8));
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (dlo, dhi) = match head.len() {
        4 => {
            let y: u32 = head.parse().ok()?;
            (y * 10000 + 101, y * 10000 + 1231)
        }
        6 => {
            let ym: u32 = head.parse().ok()?;
            let (y, m) = (ym / 100, ym % 100);
            let last = days_in(y, m);
            if last == 0 {
                return None;
            }
            (ym * 100 + 1, ym * 100 + last)
        }
        8 => {
            let d = parse_date(head)?;
            (d, d)
        }
        _ => return None,
    };
    if tail.is_empty() {
        return Some((dt_key(dlo, 0), dt_key(dhi, MICROS_PER_DAY - 1)));
    }
    if head.len() != 8 {
        return None;
    }
    let (tlo, thi) = parse_time(tail)?;
    Some((dt_key(dlo, tlo), dt_key(dhi, thi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, v: &str| Pattern::new(p).matches(v);
        assert!(m("DOE*", "DOE^JOHN"));
        assert!(!m("DOE*", "JDOE"));
        assert!(m("*JOHN", "DOE^JOHN"));
        assert!(m("D?E^*", "DOE^JOHN"));
        assert!(!m("D?E", "DOOE"));
        assert!(m("*O*O*", "DOE^JOHN"));
        assert!(!m("*O*O*O*", "DOE^JOHN"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "abbbc"));
        assert!(!m("a*b*c", "abbbcd"));
        assert!(m("a*c", "ac"));
        assert!(m("??", "éa"));
        // Pathological for a backtracking matcher; linear here.
        let long = "a".repeat(20_000);
        assert!(!m(&format!("{}b", "*a".repeat(50)), &long));
    }

    #[test]
    fn folding_and_names() {
        assert_eq!(fold("Müller^Hans"), "MULLER^HANS");
        assert_eq!(fold("Ærø"), "ÆRØ");
        assert_eq!(fold("山田^太郎"), "山田^太郎");
        let groups: Vec<&str> = pn_groups("Yamada^Tarou=山田^太郎=やまだ^たろう").collect();
        assert_eq!(groups, ["Yamada^Tarou", "山田^太郎", "やまだ^たろう"]);
        assert_eq!(pn_groups("DOE^JOHN^^^").collect::<Vec<_>>(), ["DOE^JOHN"]);
        assert_eq!(
            pn_components("DOE^JOHN PAUL^^DR").collect::<Vec<_>>(),
            ["DOE", "JOHN", "PAUL", "DR"]
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_date("20200229"), Some(20200229));
        assert_eq!(parse_date("20190229"), None);
        assert_eq!(parse_date("2020-01-01"), None);
        assert_eq!(parse_stored_date("2020.01.31"), Some(20200131));
        assert_eq!(parse_time("10"), Some((36_000_000_000, 39_599_999_999)));
        assert_eq!(parse_time("1015").unwrap().0, 36_900_000_000);
        assert_eq!(
            parse_time("101530.5"),
            Some((36_930_500_000, 36_930_599_999))
        );
        assert_eq!(parse_time("25"), None);
        assert_eq!(parse_time("1"), None);
        let (lo, hi) = parse_datetime("2020").unwrap();
        assert!(lo <= dt_key(20200615, 0) && dt_key(20201231, 1) <= hi);
        assert!(parse_datetime("20200101120000+0100").is_some());
    }
}
