//! File-type sniffing, and data sets written without a file meta header.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::tree::is_zip_name;
use super::{CopyError, copy, read_head};
use crate::dicom::parse::{self, Layout};

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `DICM` at 128 or at 0: the store takes it as it is.
    Part10,
    Zip,
    /// A data set without meta header, starting in group 0008; true when explicit VR.
    RawDataSet {
        explicit: bool,
    },
    NotDicom,
}

/// VRs, to tell an explicit VR data set from an implicit one.
const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];

pub(super) fn sniff(head: &[u8], clean_name: &str) -> Kind {
    match parse::sniff(head) {
        Layout::Part10 | Layout::NoPreamble => return Kind::Part10,
        Layout::NotPart10 => {}
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") || is_zip_name(clean_name)
    {
        return Kind::Zip;
    }
    if head.len() >= 8 && head[0..2] == [0x08, 0x00] {
        let explicit = VRS.iter().any(|vr| head[4..6] == vr[..]);
        if !explicit {
            // Implicit VR: a 4-byte length follows the tag; anything but "undefined" must be
            // plausible for a group 0008 element.
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len != u32::MAX && len > 1 << 20 {
                return Kind::NotDicom;
            }
        }
        return Kind::RawDataSet { explicit };
    }
    Kind::NotDicom
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// How far into a raw data set the SOP Class and SOP Instance UIDs are looked for.
const RAW_SCAN: usize = 64 * 1024;

/// SOP Class and SOP Instance UIDs of a data set without meta header, read from its leading
/// group 0008 elements (which come first: elements are in tag order). Every length is checked
/// against the bytes at hand, so garbage that merely starts like a data set costs nothing.
fn raw_uids(b: &[u8], explicit: bool) -> Option<(String, String)> {
    let u16_at = |p: usize| b.get(p..p + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |p: usize| {
        b.get(p..p + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let text = |v: &[u8]| {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches(['\0', ' ']);
        (!s.is_empty()).then(|| s.to_owned())
    };
    let mut pos = 0usize;
    let mut last: Option<u16> = None;
    let mut class = None;
    loop {
        if u16_at(pos)? != 0x0008 {
            return None;
        }
        let elem = u16_at(pos + 2)?;
        if last.is_some_and(|l| elem <= l) || elem > 0x0018 {
            return None;
        }
        last = Some(elem);
        let (len, header) = if explicit {
            let vr = b.get(pos + 4..pos + 6)?;
            if !VRS.iter().any(|v| vr == &v[..]) {
                return None;
            }
            if LONG_VRS.iter().any(|v| vr == &v[..]) {
                (u32_at(pos + 8)?, 12)
            } else {
                (u32::from(u16_at(pos + 6)?), 8)
            }
        } else {
            (u32_at(pos + 4)?, 8)
        };
        // Undefined lengths (a sequence before the UIDs) are not followed.
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l != u32::MAX as usize)?;
        let value = b.get(pos + header..(pos + header).checked_add(len)?)?;
        match elem {
            0x0016 => class = Some(text(value)?),
            0x0018 => return Some((class?, text(value)?)),
            _ => {}
        }
        pos += header + len;
    }
}

/// Write a data set without meta header (`src`, read from its start) to `out` as a Part 10
/// file: zero preamble, `DICM`, a file meta group naming the SOP Class and Instance and the
/// transfer syntax detected, then the data set bytes unchanged. `Ok(None)` when no SOP Class
/// and SOP Instance UIDs lead the data set (then it is not treated as DICOM).
pub(super) fn wrap_raw_dataset(
    src: &mut File,
    explicit_first: bool,
    out: &Path,
) -> Result<Option<()>, CopyError> {
    use dicom_object::FileMetaTableBuilder;

    src.seek(SeekFrom::Start(0)).map_err(CopyError::Read)?;
    let mut prefix = vec![0u8; RAW_SCAN];
    let n = read_head(src, &mut prefix).map_err(CopyError::Read)?;
    prefix.truncate(n);
    let order = if explicit_first {
        [true, false]
    } else {
        [false, true]
    };
    let Some((explicit, (class, instance))) = order
        .into_iter()
        .find_map(|explicit| raw_uids(&prefix, explicit).map(|u| (explicit, u)))
    else {
        return Ok(None);
    };
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(if explicit {
            EXPLICIT_VR_LE
        } else {
            IMPLICIT_VR_LE
        })
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(instance)
        .build()
        .map_err(|e| {
            CopyError::Read(io::Error::other(format!(
                "cannot build a file meta header: {e}"
            )))
        })?;
    let mut w = io::BufWriter::new(File::create(out).map_err(CopyError::Write)?);
    w.write_all(&[0u8; 128]).map_err(CopyError::Write)?;
    w.write_all(b"DICM").map_err(CopyError::Write)?;
    meta.write(&mut w)
        .map_err(|e| CopyError::Write(io::Error::other(format!("file meta header: {e}"))))?;
    src.seek(SeekFrom::Start(0)).map_err(CopyError::Read)?;
    copy(src, &mut w)?;
    w.into_inner()
        .map_err(|e| CopyError::Write(e.into_error()))?;
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_the_layouts_apart() {
        let mut p10 = vec![0xAAu8; 128];
        p10.extend_from_slice(b"DICM");
        assert_eq!(sniff(&p10, "X"), Kind::Part10);
        // A preamble that looks like a ZIP does not make a DICOM file an archive.
        p10[..4].copy_from_slice(b"PK\x03\x04");
        assert_eq!(sniff(&p10, "X.ZIP"), Kind::Part10);
        assert_eq!(sniff(b"DICM\x02\x00\x00\x00", "X"), Kind::Part10);
        assert_eq!(sniff(b"PK\x03\x04rest", "X"), Kind::Zip);
        assert_eq!(sniff(b"", "A.ZIP"), Kind::Zip);
        // (0008,0005) implicit VR, length 10
        assert_eq!(
            sniff(&[0x08, 0, 0x05, 0, 10, 0, 0, 0], "X"),
            Kind::RawDataSet { explicit: false }
        );
        assert_eq!(
            sniff(&[0x08, 0, 0x05, 0, b'C', b'S', 10, 0], "X"),
            Kind::RawDataSet { explicit: true }
        );
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n", "X.PNG"), Kind::NotDicom);
        assert_eq!(
            sniff(&[0x08, 0, 0x05, 0, 0, 0, 0, 0x40], "X"),
            Kind::NotDicom
        );
    }

    #[test]
    fn raw_data_sets_give_their_uids_when_lengths_fit() {
        let el = |e: u16, v: &[u8]| {
            let mut b = vec![0x08, 0x00];
            b.extend_from_slice(&e.to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
            b
        };
        let mut ds = el(0x0005, b"ISO_IR 100");
        ds.extend(el(0x0016, b"1.2.840.10008.5.1.4.1.1.2\0"));
        ds.extend(el(0x0018, b"2.25.7"));
        ds.extend(el(0x0020, b"20240101"));
        assert_eq!(
            raw_uids(&ds, false),
            Some(("1.2.840.10008.5.1.4.1.1.2".into(), "2.25.7".into()))
        );
        assert_eq!(raw_uids(&ds, true), None);
        // A length running past the bytes, elements out of order, no SOP Class UID.
        let mut bad = ds.clone();
        bad[4..8].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        assert_eq!(raw_uids(&bad, false), None);
        let mut swapped = el(0x0018, b"2.25.7");
        swapped.extend(el(0x0016, b"1.2.3"));
        assert_eq!(raw_uids(&swapped, false), None);
        assert_eq!(raw_uids(&el(0x0018, b"2.25.7"), false), None);
    }
}
