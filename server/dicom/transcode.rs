//! Which transfer syntax an instance goes out in (PS3.18 8.7.3), and the conversion itself.
//!
//! Decisions are made from the stored transfer syntax alone (from the index), before any byte
//! is streamed, so a retrieve can answer 206 or 406 up front. Conversions open the one file
//! and go through dicom-pixeldata's `Transcode` (decoders: JPEG baseline/extended/lossless, RLE,
//! JPEG 2000 via OpenJPEG's Rust port, JPEG-LS via CharLS; encoders: JPEG-LS lossless via
//! CharLS, JPEG 2000 lossless via [`super::j2k`]), then fix
//! what a decompression changes: PlanarConfiguration, and LossyImageCompression when the source
//! was lossy. 12-bit JPEG, which dicom-pixeldata cannot decode, is first decoded to native
//! samples by our own decoder ([`crate::render::jpeg12`]).

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// What the client asked for (the `transfer-syntax` media-type parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// No parameter: Explicit VR Little Endian, except lossy data and video stay as stored.
    Default,
    /// `transfer-syntax=*`: as stored, except Implicit VR LE and big endian (not for the web).
    AsStored,
    /// A named transfer syntax.
    Named(String),
}

impl Want {
    pub fn from_param(p: Option<&str>) -> Want {
        match p.map(str::trim) {
            None | Some("") => Want::Default,
            Some("*") => Want::AsStored,
            Some(t) => Want::Named(t.to_owned()),
        }
    }
}

/// Lossy transfer syntaxes: data stored in them may stay so by default (PS3.18 8.7.3.5.2).
pub fn is_lossy(ts: &str) -> bool {
    matches!(
        ts,
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.81"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.203"
            | "1.2.840.10008.1.2.4.111"
            | "1.2.840.10008.1.2.4.112"
    ) || is_video(ts)
}

/// MPEG-2, MPEG-4 and HEVC: never decoded.
pub fn is_video(ts: &str) -> bool {
    ts.strip_prefix("1.2.840.10008.1.2.4.")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (100..=108).contains(&n))
}

/// Transfer syntaxes whose pixel data is not encapsulated.
pub fn is_native(ts: &str) -> bool {
    matches!(ts, IMPLICIT_LE | EXPLICIT_LE | DEFLATED_LE | EXPLICIT_BE)
}

/// Whether this build can decode pixel data stored in `ts`.
pub fn can_decode(ts: &str) -> bool {
    is_native(ts)
        || matches!(
            ts,
            "1.2.840.10008.1.2.4.50"
                | "1.2.840.10008.1.2.4.51"
                | "1.2.840.10008.1.2.4.57"
                | "1.2.840.10008.1.2.4.70"
                | "1.2.840.10008.1.2.5"
                | "1.2.840.10008.1.2.4.90"
                | "1.2.840.10008.1.2.4.91"
                | JPEG_LS_LOSSLESS
                | "1.2.840.10008.1.2.4.81"
        )
}

/// Transfer syntaxes this build can write from decoded pixels.
pub const TARGETS: &[&str] = &[EXPLICIT_LE, JPEG_LS_LOSSLESS, J2K_LOSSLESS];

/// The transfer syntax an instance stored in `stored` goes out in, or `None` when it cannot be
/// delivered as asked.
pub fn plan(stored: &str, want: &Want) -> Option<String> {
    match want {
        Want::Default => {
            if stored == EXPLICIT_LE || is_lossy(stored) {
                Some(stored.to_owned())
            } else if can_decode(stored) {
                Some(EXPLICIT_LE.to_owned())
            } else {
                None
            }
        }
        Want::AsStored => Some(if matches!(stored, IMPLICIT_LE | EXPLICIT_BE) {
            EXPLICIT_LE.to_owned()
        } else {
            stored.to_owned()
        }),
        Want::Named(t) if matches!(t.as_str(), IMPLICIT_LE | EXPLICIT_BE) => None,
        Want::Named(t) if t == stored => Some(stored.to_owned()),
        Want::Named(t)
            if TARGETS.contains(&t.as_str()) && can_decode(stored) && !is_video(stored) =>
        {
            Some(t.clone())
        }
        Want::Named(_) => None,
    }
}

/// Reads the file and writes it again in `target`: a whole Part 10 file. Blocking; holds the
/// instance in memory (one instance at a time per request).
pub fn convert(path: &Path, target: &str) -> Result<Vec<u8>, String> {
    let mut obj = dicom_object::open_file(path).map_err(|e| format!("cannot read: {e}"))?;
    let source = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let ts = TransferSyntaxRegistry
        .get(target)
        .ok_or_else(|| format!("transfer syntax {target} is not known"))?;
    let was_encapsulated = !is_native(&source);
    decode_12_bit_jpeg(&mut obj, &source)?;
    if target == J2K_LOSSLESS {
        // Through native samples, then our own encoder (see `j2k`).
        let ele = TransferSyntaxRegistry.get(EXPLICIT_LE).expect("built in");
        obj.transcode(ele)
            .map_err(|e| format!("cannot decode {source}: {e}"))?;
        if was_encapsulated {
            // Decoders hand out interleaved samples.
            obj.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
        encode_j2k(&mut obj)?;
        obj.update_meta(|m| m.set_transfer_syntax(ts));
    } else {
        obj.transcode(ts)
            .map_err(|e| format!("cannot convert from {source} to {target}: {e}"))?;
    }
    if was_encapsulated && is_native(target) {
        let samples = obj
            .get(tags::SAMPLES_PER_PIXEL)
            .and_then(|e| e.to_int::<u16>().ok())
            .unwrap_or(1);
        if samples > 1 {
            // Decoders hand out interleaved samples.
            obj.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
    }
    if is_lossy(&source) {
        obj.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION,
            VR::CS,
            PrimitiveValue::from("01"),
        ));
    }
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| format!("cannot write {target}: {e}"))?;
    Ok(out)
}

/// 12-bit JPEG (JPEG baseline/extended with Bits Stored above 8): every frame decoded with
/// [`crate::render::jpeg12`] into native 16-bit samples (YBR converted to RGB, as the 8-bit
/// decoder does), and the object relabelled Explicit VR Little Endian, so the conversion goes on
/// from native data. Anything else is left alone.
fn decode_12_bit_jpeg(
    obj: &mut dicom_object::DefaultDicomObject,
    source: &str,
) -> Result<(), String> {
    use crate::render::jpeg12;
    if !matches!(source, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51") {
        return Ok(());
    }
    let int = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_int::<u32>().ok())
            .map(|v| v as usize)
    };
    if int(tags::BITS_STORED).unwrap_or(8) <= 8 {
        return Ok(());
    }
    let (rows, cols) = (
        int(tags::ROWS).unwrap_or(0),
        int(tags::COLUMNS).unwrap_or(0),
    );
    let spp = int(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let frames = int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let pi = obj
        .get(tags::PHOTOMETRIC_INTERPRETATION)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let pixel_data = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?;
    let fragments = pixel_data
        .value()
        .fragments()
        .ok_or("the Pixel Data is not encapsulated")?;
    let jpegs = split_jpeg_frames(fragments, frames)?;
    let mut samples: Vec<u16> = Vec::with_capacity(rows * cols * spp * frames);
    let mut rgb = false;
    for (i, jpeg) in jpegs.iter().enumerate() {
        let mut img = jpeg12::decode(jpeg, rows * cols)
            .map_err(|e| format!("cannot decode 12-bit JPEG frame {}: {e}", i + 1))?;
        if (img.width, img.height, img.components) != (cols, rows, spp) {
            return Err(format!(
                "JPEG frame {} is {}×{}×{}, the header says {cols}×{rows}×{spp}",
                i + 1,
                img.width,
                img.height,
                img.components
            ));
        }
        if spp == 3 && (pi.starts_with("YBR") || crate::render::pixels::jpeg_declares_ycc(jpeg)) {
            jpeg12::ycbcr_to_rgb(&mut img);
            rgb = true;
        }
        samples.extend_from_slice(&img.samples);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(samples.into()),
    ));
    obj.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    if rgb {
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("RGB"),
        ));
    }
    let ele = TransferSyntaxRegistry.get(EXPLICIT_LE).expect("built in");
    obj.update_meta(|m| m.set_transfer_syntax(ele));
    Ok(())
}

/// The JPEG stream of each frame: every fragment starting with an SOI marker begins a frame
/// (PS3.5 A.4: a frame may span fragments, a fragment never holds two frames).
fn split_jpeg_frames(fragments: &[Vec<u8>], frames: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(frames);
    for f in fragments {
        if f.starts_with(&[0xFF, 0xD8]) || out.is_empty() {
            out.push(Vec::new());
        }
        out.last_mut().expect("pushed").extend_from_slice(f);
    }
    if out.len() != frames {
        return Err(format!(
            "{} JPEG streams in the Pixel Data for {frames} frame(s)",
            out.len()
        ));
    }
    Ok(out)
}

/// Replaces native Pixel Data by JPEG 2000 lossless fragments, one per frame.
fn encode_j2k(obj: &mut dicom_object::DefaultDicomObject) -> Result<(), String> {
    let int = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_int::<u32>().ok())
            .ok_or_else(|| format!("{tag} is missing"))
    };
    let layout = super::j2k::Layout {
        rows: int(tags::ROWS)?,
        columns: int(tags::COLUMNS)?,
        samples_per_pixel: int(tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        bits_allocated: int(tags::BITS_ALLOCATED)? as u16,
        bits_stored: int(tags::BITS_STORED)? as u16,
        signed: int(tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
        planar: int(tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1,
    };
    let frames = obj
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize;
    let pixels = obj
        .get(tags::PIXEL_DATA)
        .ok_or("no pixel data")?
        .to_bytes()
        .map_err(|e| format!("pixel data: {e}"))?
        .into_owned();
    let len = layout.frame_len();
    if len == 0 || pixels.len() < len * frames {
        return Err("pixel data is shorter than its frames".into());
    }
    let mut fragments = Vec::with_capacity(frames);
    let mut offsets = Vec::with_capacity(frames);
    let mut at = 0u32;
    for f in 0..frames {
        let j2k = super::j2k::encode_frame(&layout, &pixels[f * len..(f + 1) * len])?;
        offsets.push(at);
        at += 8 + j2k.len() as u32;
        fragments.push(j2k);
    }
    obj.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        VR::OB,
        dicom_core::Length::UNDEFINED,
        dicom_core::value::PixelFragmentSequence::new(offsets, fragments),
    ));
    if layout.samples_per_pixel > 1 {
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dicom")
            .join(name)
    }

    fn pixels(bytes: &[u8]) -> Vec<u8> {
        use dicom_pixeldata::PixelDecoder;
        let obj = dicom_object::from_reader(&bytes[128..]).expect("parses");
        obj.decode_pixel_data().expect("decodes").data().to_vec()
    }

    #[test]
    fn lossless_targets_round_trip_to_the_reference_pixels() {
        for (source, target) in [
            ("ct_explicit.dcm", J2K_LOSSLESS),
            ("ct_explicit.dcm", JPEG_LS_LOSSLESS),
            ("ct_rle.dcm", J2K_LOSSLESS),
            ("ct_implicit.dcm", EXPLICIT_LE),
            ("ct_bigendian.dcm", EXPLICIT_LE),
            ("ct_deflate.dcm", EXPLICIT_LE),
            ("ct_j2k.dcm", EXPLICIT_LE),
            ("ct_jpegls.dcm", EXPLICIT_LE),
        ] {
            // The reference: the source's own pixels, as the decoder reads them.
            let reference = pixels(&std::fs::read(fixture(source)).unwrap());
            let out = convert(&fixture(source), target).unwrap_or_else(|e| panic!("{source}: {e}"));
            let obj = dicom_object::from_reader(&out[128..]).unwrap();
            assert_eq!(
                obj.meta().transfer_syntax().trim_end_matches('\0'),
                target,
                "{source}"
            );
            let got = pixels(&out);
            assert!(
                got == reference,
                "{source} -> {target}: pixels differ ({} vs {} bytes)",
                got.len(),
                reference.len()
            );
        }
    }

    #[test]
    fn transfer_syntax_rules() {
        let d = Want::Default;
        assert_eq!(plan(EXPLICIT_LE, &d).as_deref(), Some(EXPLICIT_LE));
        assert_eq!(plan(IMPLICIT_LE, &d).as_deref(), Some(EXPLICIT_LE));
        assert_eq!(plan(EXPLICIT_BE, &d).as_deref(), Some(EXPLICIT_LE));
        assert_eq!(plan(DEFLATED_LE, &d).as_deref(), Some(EXPLICIT_LE));
        assert_eq!(
            plan("1.2.840.10008.1.2.4.70", &d).as_deref(),
            Some(EXPLICIT_LE)
        );
        assert_eq!(
            plan("1.2.840.10008.1.2.4.50", &d).as_deref(),
            Some("1.2.840.10008.1.2.4.50"),
            "lossy stays lossy"
        );
        assert_eq!(
            plan("1.2.840.10008.1.2.4.102", &d).as_deref(),
            Some("1.2.840.10008.1.2.4.102"),
            "video is never decoded"
        );
        assert_eq!(
            plan("1.2.840.10008.1.2.4.201", &d),
            None,
            "HTJ2K: no decoder"
        );
        let any = Want::AsStored;
        assert_eq!(plan(IMPLICIT_LE, &any).as_deref(), Some(EXPLICIT_LE));
        assert_eq!(plan(DEFLATED_LE, &any).as_deref(), Some(DEFLATED_LE));
        assert_eq!(
            plan("1.2.840.10008.1.2.4.201", &any).as_deref(),
            Some("1.2.840.10008.1.2.4.201")
        );
        let named = |t: &str| Want::Named(t.into());
        assert_eq!(plan(EXPLICIT_LE, &named(IMPLICIT_LE)), None);
        assert_eq!(
            plan("1.2.840.10008.1.2.4.90", &named(EXPLICIT_LE)).as_deref(),
            Some(EXPLICIT_LE)
        );
        assert_eq!(
            plan(EXPLICIT_LE, &named(JPEG_LS_LOSSLESS)).as_deref(),
            Some(JPEG_LS_LOSSLESS)
        );
        assert_eq!(plan(EXPLICIT_LE, &named("1.2.840.10008.1.2.4.50")), None);
        assert_eq!(
            plan(IMPLICIT_LE, &named(J2K_LOSSLESS)).as_deref(),
            Some(J2K_LOSSLESS)
        );
        assert_eq!(plan("1.2.840.10008.1.2.4.102", &named(EXPLICIT_LE)), None);
    }
}
