//! A compact, read-only form of a DICOM JSON data set for matching: every value as text in one
//! string, looked up by tag with a binary search. About a tenth of the memory of a
//! `serde_json::Value`, so the whole archive's study and series attributes fit in memory.

use dicom_core::Tag;
use serde_json::Value as Json;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flat {
    /// Every value, multi-values joined by `\`, PN as `Alphabetic=Ideographic=Phonetic`.
    text: Box<str>,
    /// (tag, start, end) into `text`, sorted by tag.
    attrs: Box<[(u32, u32, u32)]>,
    /// Sequence items, sorted by tag.
    seqs: Box<[(u32, Box<[Flat]>)]>,
}

fn tag_key(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

fn parse_key(k: &str) -> Option<u32> {
    (k.len() == 8)
        .then(|| u32::from_str_radix(k, 16).ok())
        .flatten()
}

/// The text of one DICOM JSON value, as matching sees it.
pub fn value_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.trim().to_owned()),
        Json::Number(n) => Some(n.to_string()),
        Json::Object(m) => {
            // PN
            let g = |k: &str| m.get(k).and_then(Json::as_str).unwrap_or("");
            let s = format!("{}={}={}", g("Alphabetic"), g("Ideographic"), g("Phonetic"));
            Some(s.trim_end_matches('=').to_owned())
        }
        _ => None,
    }
}

impl Flat {
    /// From a DICOM JSON object (`{"00100010": {"vr": "PN", "Value": [...]}, ...}`); bulk data
    /// and empty values are left out. `extra` adds computed attributes.
    pub fn from_json(obj: &Json, extra: &[(Tag, String)]) -> Flat {
        let mut text = String::new();
        let mut attrs = Vec::new();
        let mut seqs = Vec::new();
        if let Json::Object(m) = obj {
            for (k, el) in m {
                let Some(tag) = parse_key(k) else { continue };
                let Some(values) = el.get("Value").and_then(Json::as_array) else {
                    continue;
                };
                if el.get("vr").and_then(Json::as_str) == Some("SQ") {
                    let items: Box<[Flat]> =
                        values.iter().map(|i| Flat::from_json(i, &[])).collect();
                    seqs.push((tag, items));
                    continue;
                }
                let joined: Vec<String> = values.iter().filter_map(value_text).collect();
                let joined = joined.join("\\");
                if joined.is_empty() {
                    continue;
                }
                let start = text.len() as u32;
                text.push_str(&joined);
                attrs.push((tag, start, text.len() as u32));
            }
        }
        for (tag, v) in extra {
            if v.is_empty() {
                continue;
            }
            let key = tag_key(*tag);
            attrs.retain(|(t, _, _)| *t != key);
            let start = text.len() as u32;
            text.push_str(v);
            attrs.push((key, start, text.len() as u32));
        }
        attrs.sort_unstable_by_key(|a| a.0);
        seqs.sort_unstable_by_key(|s| s.0);
        Flat {
            text: text.into_boxed_str(),
            attrs: attrs.into_boxed_slice(),
            seqs: seqs.into_boxed_slice(),
        }
    }

    /// The value (multi-values joined by `\`), or `None` when absent or empty.
    pub fn get(&self, tag: Tag) -> Option<&str> {
        let key = tag_key(tag);
        self.attrs
            .binary_search_by_key(&key, |a| a.0)
            .ok()
            .map(|i| {
                let (_, s, e) = self.attrs[i];
                &self.text[s as usize..e as usize]
            })
    }

    /// The items of a sequence (empty when absent).
    pub fn items(&self, tag: Tag) -> &[Flat] {
        let key = tag_key(tag);
        self.seqs
            .binary_search_by_key(&key, |s| s.0)
            .map(|i| &*self.seqs[i].1)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_values_names_and_sequences() {
        let f = Flat::from_json(
            &json!({
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
                "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]},
                "00200011": {"vr": "IS", "Value": [3]},
                "00081030": {"vr": "LO"},
                "7FE00010": {"vr": "OW", "BulkDataURI": "x"},
                "00400275": {"vr": "SQ", "Value": [{"00400009": {"vr": "SH", "Value": ["SPS1"]}}]}
            }),
            &[(Tag(0x0008, 0x0061), "CT\\MR".into())],
        );
        assert_eq!(f.get(Tag(0x0010, 0x0010)), Some("Yamada^Tarou=山田^太郎"));
        assert_eq!(f.get(Tag(0x0008, 0x0008)), Some("ORIGINAL\\PRIMARY"));
        assert_eq!(f.get(Tag(0x0020, 0x0011)), Some("3"));
        assert_eq!(f.get(Tag(0x0008, 0x1030)), None);
        assert_eq!(f.get(Tag(0x7FE0, 0x0010)), None);
        assert_eq!(f.get(Tag(0x0008, 0x0061)), Some("CT\\MR"));
        assert_eq!(
            f.items(Tag(0x0040, 0x0275))[0].get(Tag(0x0040, 0x0009)),
            Some("SPS1")
        );
    }
}
