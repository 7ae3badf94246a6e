//! DICOM JSON → Native DICOM Model XML (PS3.19 A.1), for `application/dicom+xml` responses.
//! Covers what our responses contain: strings, numbers, PN, sequences, BulkDataURI,
//! InlineBinary.

use serde_json::Value as Json;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

fn dataset(obj: &serde_json::Map<String, Json>, out: &mut String) {
    for (tag, el) in obj {
        let vr = el.get("vr").and_then(Json::as_str).unwrap_or("UN");
        out.push_str(&format!(
            "<DicomAttribute tag=\"{}\" vr=\"{}\">",
            esc(tag),
            esc(vr)
        ));
        if let Some(uri) = el.get("BulkDataURI").and_then(Json::as_str) {
            out.push_str(&format!("<BulkData uri=\"{}\"/>", esc(uri)));
        } else if let Some(b) = el.get("InlineBinary").and_then(Json::as_str) {
            out.push_str(&format!("<InlineBinary>{}</InlineBinary>", esc(b)));
        } else if let Some(values) = el.get("Value").and_then(Json::as_array) {
            for (i, v) in values.iter().enumerate() {
                let n = i + 1;
                match (vr, v) {
                    ("SQ", Json::Object(item)) => {
                        out.push_str(&format!("<Item number=\"{n}\">"));
                        dataset(item, out);
                        out.push_str("</Item>");
                    }
                    ("PN", Json::Object(pn)) => {
                        out.push_str(&format!("<PersonName number=\"{n}\">"));
                        for group in ["Alphabetic", "Ideographic", "Phonetic"] {
                            if let Some(s) = pn.get(group).and_then(Json::as_str) {
                                out.push_str(&format!("<{group}>"));
                                let comps = [
                                    "FamilyName",
                                    "GivenName",
                                    "MiddleName",
                                    "NamePrefix",
                                    "NameSuffix",
                                ];
                                for (c, part) in comps.iter().zip(s.split('^')) {
                                    if !part.is_empty() {
                                        out.push_str(&format!("<{c}>{}</{c}>", esc(part)));
                                    }
                                }
                                out.push_str(&format!("</{group}>"));
                            }
                        }
                        out.push_str("</PersonName>");
                    }
                    (_, Json::String(s)) => {
                        out.push_str(&format!("<Value number=\"{n}\">{}</Value>", esc(s)))
                    }
                    (_, Json::Null) => out.push_str(&format!("<Value number=\"{n}\"/>")),
                    (_, other) => out.push_str(&format!("<Value number=\"{n}\">{other}</Value>")),
                }
            }
        }
        out.push_str("</DicomAttribute>");
    }
}

/// Serialise a DICOM JSON object as a NativeDicomModel document.
pub fn to_native_xml(obj: &Json) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<NativeDicomModel xmlns=\"http://dicom.nema.org/PS3.19/models/NativeDICOM\">",
    );
    if let Json::Object(m) = obj {
        dataset(m, &mut out);
    }
    out.push_str("</NativeDicomModel>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sequences_and_escapes() {
        let j = serde_json::json!({
            "00081190": {"vr": "UR", "Value": ["http://h/x?a=1&b=2"]},
            "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]}}]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^<John>"}]}
        });
        let x = to_native_xml(&j);
        assert!(x.contains("<Value number=\"1\">http://h/x?a=1&amp;b=2</Value>"));
        assert!(x.contains("<Item number=\"1\"><DicomAttribute tag=\"00081155\" vr=\"UI\"><Value number=\"1\">1.2</Value>"));
        assert!(x.contains("<GivenName>&lt;John&gt;</GivenName>"));
    }
}
