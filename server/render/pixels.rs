//! One frame's samples, as the rendering pipeline needs them.
//!
//! Native frames are read with the byte ranges ingest recorded (one frame of I/O). Compressed
//! frames go to dicom-pixeldata's decoders with the instance header and that frame's fragments
//! only. Deflated and big-endian instances, which have no byte ranges, are decoded whole.
//!
//! The decoders of JPEG (lossy) and JPEG 2000 turn YBR into RGB themselves; RLE and JPEG-LS do
//! not. [`Frame::photometric`] is what the samples are *after* decoding, so that colour is never
//! converted twice.

use std::path::Path;

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

use super::RenderError;
use crate::dicom::parse::FrameAccess;
use crate::dicom::transcode;
use crate::dicom::walk::Frame as StoredFrame;
use crate::dicomweb::bulk::{read_bits, read_fragments};
use crate::store::records::InstanceRecord;

/// Samples of one frame in native little-endian order, `bits_allocated` bits each
/// (1-bit data is expanded to one byte per sample).
#[derive(Debug, Clone)]
pub struct Frame {
    pub rows: u32,
    pub cols: u32,
    pub spp: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    pub signed: bool,
    /// Photometric interpretation of `data` (after any conversion a decoder made).
    pub photometric: String,
    /// Colour-by-plane (Planar Configuration 1).
    pub planar: bool,
    pub data: Vec<u8>,
}

/// Reads a 16-bit unsigned attribute.
pub fn u16_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
}

/// Reads an integer attribute given as IS or a binary integer.
pub fn int_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

/// Reads a string attribute, trimmed, first value.
pub fn str_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.split('\\')
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| c == ' ' || c == '\0')
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

/// The image geometry declared by a header.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub rows: u32,
    pub cols: u32,
    pub frames: u32,
    pub spp: u16,
    pub bits_allocated: u16,
}

impl Geometry {
    pub fn of(obj: &InMemDicomObject) -> Option<Geometry> {
        Some(Geometry {
            rows: u32::from(u16_of(obj, tags::ROWS)?),
            cols: u32::from(u16_of(obj, tags::COLUMNS)?),
            frames: int_of(obj, tags::NUMBER_OF_FRAMES)
                .filter(|n| *n > 0)
                .map_or(1, |n| n as u32),
            spp: u16_of(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1),
            bits_allocated: u16_of(obj, tags::BITS_ALLOCATED).unwrap_or(8),
        })
    }

    /// Bytes of all frames once decoded (the figure the decode cap is compared with).
    pub fn decoded_bytes(&self) -> u64 {
        u64::from(self.rows)
            * u64::from(self.cols)
            * u64::from(self.frames)
            * u64::from(self.spp)
            * u64::from(self.bits_allocated.max(8) / 8)
    }
}

/// The instance header: everything up to Pixel Data, or the whole file when frames have no
/// byte ranges (the decoder then needs the pixel data too).
pub fn read_header(path: &Path, rec: &InstanceRecord) -> Result<DefaultDicomObject, RenderError> {
    let opts = dicom_object::OpenFileOptions::new();
    let opened = match rec.frames {
        FrameAccess::DecodeOnRequest => opts.open_file(path),
        _ => opts.read_until(tags::PIXEL_DATA).open_file(path),
    };
    opened.map_err(|e| RenderError::Decode(format!("cannot read the instance: {e}")))
}

/// Whether the decoder of `ts` converts YBR colour to RGB itself.
fn decoder_converts_colour(ts: &str) -> bool {
    matches!(
        ts,
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203"
    )
}

fn header_frame(obj: &InMemDicomObject, data: Vec<u8>) -> Result<Frame, RenderError> {
    let geometry = Geometry::of(obj)
        .ok_or_else(|| RenderError::NotImage("the instance has no Rows/Columns".into()))?;
    let bits_allocated = geometry.bits_allocated;
    let bits_stored = u16_of(obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    Ok(Frame {
        rows: geometry.rows,
        cols: geometry.cols,
        spp: geometry.spp,
        bits_allocated,
        bits_stored,
        high_bit: u16_of(obj, tags::HIGH_BIT).unwrap_or(bits_stored.saturating_sub(1)),
        signed: u16_of(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        photometric: str_of(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .unwrap_or_else(|| "MONOCHROME2".into()),
        planar: u16_of(obj, tags::PLANAR_CONFIGURATION) == Some(1),
        data,
    })
}

fn from_decoded(
    d: &dicom_pixeldata::DecodedPixelData<'_>,
    frame_index: u32,
    stored_pi: &str,
    ts: &str,
) -> Result<Frame, RenderError> {
    let bytes = if d.number_of_frames() > 1 {
        d.frame_data(frame_index)
            .map_err(|e| RenderError::Decode(e.to_string()))?
            .to_vec()
    } else {
        d.data().to_vec()
    };
    let photometric = if d.samples_per_pixel() == 3 && !decoder_converts_colour(ts) {
        stored_pi.to_string()
    } else {
        d.photometric_interpretation().as_str().to_string()
    };
    Ok(Frame {
        rows: d.rows(),
        cols: d.columns(),
        spp: d.samples_per_pixel(),
        bits_allocated: d.bits_allocated(),
        bits_stored: d.bits_stored(),
        high_bit: d.high_bit(),
        signed: d.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed,
        photometric,
        planar: d.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst,
        data: bytes,
    })
}

fn decode_error(e: impl std::fmt::Display) -> RenderError {
    RenderError::Decode(format!("the pixel data cannot be decoded: {e}"))
}

/// JPEG lossy (Baseline / Extended) with more than 8 bits stored: 12-bit JPEG, which
/// dicom-pixeldata's decoder (jpeg-decoder) refuses; decoded by our own [`super::jpeg12`].
fn is_12_bit_jpeg(ts: &str, header: &InMemDicomObject) -> bool {
    matches!(ts, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51")
        && u16_of(header, tags::BITS_STORED).unwrap_or(8) > 8
}

/// A 12-bit JPEG frame: samples as stored (Bits Stored of the header, unsigned in the stream;
/// a signed Pixel Representation is sign-extended later by the pipeline), YBR converted to RGB
/// like the 8-bit decoder does.
fn jpeg12_frame(
    header: &InMemDicomObject,
    jpeg: &[u8],
    stored_pi: &str,
) -> Result<Frame, RenderError> {
    let mut f = header_frame(header, Vec::new())?;
    let mut img =
        super::jpeg12::decode(jpeg, (f.rows as usize) * (f.cols as usize)).map_err(|e| {
            RenderError::Decode(format!("the 12-bit JPEG frame cannot be decoded: {e}"))
        })?;
    if img.components != usize::from(f.spp) {
        return Err(RenderError::Decode(format!(
            "the JPEG frame has {} components, the header says {} samples per pixel",
            img.components, f.spp
        )));
    }
    if img.components == 3 && (stored_pi.starts_with("YBR") || jpeg_declares_ycc(jpeg)) {
        super::jpeg12::ycbcr_to_rgb(&mut img);
        f.photometric = "RGB".into();
    }
    (f.rows, f.cols) = (img.height as u32, img.width as u32);
    f.bits_allocated = 16;
    f.bits_stored = f.bits_stored.clamp(1, u16::from(img.precision).max(8));
    f.high_bit = f.bits_stored - 1;
    f.planar = false;
    f.data = img.samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(f)
}

/// Whether a JPEG stream declares YCbCr coding: a JFIF APP0 segment, or an Adobe APP14 segment
/// with transform 1. Without either, a DICOM image labelled RGB was compressed without a colour
/// transform (PS3.5 8.2.1), and must not be converted from YCbCr.
pub(crate) fn jpeg_declares_ycc(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let body = &jpeg[(i + 4).min(jpeg.len())..(i + 2 + len).min(jpeg.len())];
        match marker {
            0xE0 if body.starts_with(b"JFIF\0") => return true,
            0xEE if body.starts_with(b"Adobe") && body.len() >= 12 => return body[11] == 1,
            _ => {}
        }
        i += 2 + len;
    }
    false
}

/// A JPEG lossy frame labelled RGB, decoded without any colour transform.
fn jpeg_rgb_as_stored(header: &InMemDicomObject, jpeg: &[u8]) -> Result<Frame, RenderError> {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    let data = d.decode().map_err(decode_error)?;
    let info = d
        .info()
        .ok_or_else(|| RenderError::Decode("the JPEG stream has no frame header".into()))?;
    let mut f = header_frame(header, data)?;
    (f.rows, f.cols) = (u32::from(info.height), u32::from(info.width));
    (f.bits_allocated, f.bits_stored, f.high_bit, f.signed) = (8, 8, 7, false);
    (f.photometric, f.planar) = ("RGB".into(), false);
    Ok(f)
}

/// RLE Lossless (PS3.5 Annex G) with 32-bit samples, which dicom-pixeldata's decoder refuses:
/// one PackBits segment per byte plane, most significant byte first, per sample.
fn rle_decode(header: &InMemDicomObject, rle: &[u8]) -> Result<Frame, RenderError> {
    let bad = |why: &str| RenderError::Decode(format!("RLE: {why}"));
    let mut f = header_frame(header, Vec::new())?;
    let bytes = usize::from(f.bits_allocated / 8);
    let spp = usize::from(f.spp);
    let pixels = (f.rows * f.cols) as usize;
    if rle.len() < 64 {
        return Err(bad("no segment header"));
    }
    let word = |i: usize| u32::from_le_bytes([rle[i], rle[i + 1], rle[i + 2], rle[i + 3]]) as usize;
    let segments = word(0);
    if segments != bytes * spp || segments > 15 {
        return Err(bad(&format!(
            "{segments} segments for {spp} sample(s) of {bytes} byte(s)"
        )));
    }
    let offsets: Vec<usize> = (0..segments).map(|k| word(4 + 4 * k)).collect();
    let mut out = vec![0u8; pixels * spp * bytes];
    for k in 0..segments {
        let start = offsets[k];
        let end = offsets
            .get(k + 1)
            .copied()
            .unwrap_or(rle.len())
            .min(rle.len());
        if start > end {
            return Err(bad("segment offsets out of order"));
        }
        let plane = packbits(&rle[start..end], pixels);
        let (sample, byte) = (k / bytes, bytes - 1 - k % bytes);
        for (p, v) in plane.into_iter().enumerate() {
            // Colour RLE is decoded colour-by-pixel (interleaved).
            out[(p * spp + sample) * bytes + byte] = v;
        }
    }
    f.data = out;
    f.planar = false;
    Ok(f)
}

/// PackBits (PS3.5 G.3.1), at most `limit` bytes out.
fn packbits(src: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit);
    let mut i = 0;
    while i < src.len() && out.len() < limit {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let end = (i + n as usize + 1).min(src.len());
            out.extend_from_slice(&src[i..end]);
            i = end;
        } else if n != -128 {
            if let Some(&b) = src.get(i) {
                out.extend(std::iter::repeat_n(b, (1 - i32::from(n)) as usize));
            }
            i += 1;
        }
    }
    out.resize(limit, 0);
    out
}

/// Frame `n` (1-based) of an instance whose header is `header`.
pub fn frame(
    path: &Path,
    rec: &InstanceRecord,
    header: &DefaultDicomObject,
    n: u32,
) -> Result<Frame, RenderError> {
    let ts = rec.transfer_syntax.as_str();
    let stored_pi =
        str_of(header, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into());
    match &rec.frames {
        FrameAccess::None => Err(RenderError::NotImage(
            "the instance has no pixel data".into(),
        )),
        FrameAccess::Unknown(why) => Err(RenderError::Decode(format!(
            "the frames of this instance cannot be located: {why}"
        ))),
        FrameAccess::Indexed(frames) => {
            let stored = frames
                .get(n as usize - 1)
                .ok_or(RenderError::NoFrame(n, frames.len() as u32))?;
            if transcode::is_native(ts) {
                let io = |e: std::io::Error| RenderError::Decode(format!("cannot read: {e}"));
                match stored {
                    StoredFrame::Bytes { fragments } => {
                        header_frame(header, read_fragments(path, fragments).map_err(io)?)
                    }
                    StoredFrame::Bits {
                        bit_offset,
                        bit_length,
                    } => {
                        let packed = read_bits(path, *bit_offset, *bit_length).map_err(io)?;
                        let expanded = (0..*bit_length as usize)
                            .map(|i| (packed[i / 8] >> (i % 8)) & 1)
                            .collect();
                        let mut f = header_frame(header, expanded)?;
                        (f.bits_allocated, f.bits_stored, f.high_bit) = (8, 1, 0);
                        Ok(f)
                    }
                }
            } else {
                if !transcode::can_decode(ts) {
                    return Err(RenderError::Unsupported(format!(
                        "pixel data stored in transfer syntax {ts} cannot be decoded by this server"
                    )));
                }
                let StoredFrame::Bytes { fragments } = stored else {
                    return Err(RenderError::Decode("unexpected bit-packed frame".into()));
                };
                let pieces = fragments
                    .iter()
                    .map(|f| read_fragments(path, std::slice::from_ref(f)))
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| RenderError::Decode(format!("cannot read: {e}")))?;
                let spp = u16_of(header, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
                let bits = u16_of(header, tags::BITS_ALLOCATED).unwrap_or(8);
                if ts == "1.2.840.10008.1.2.5" && bits == 32 {
                    return rle_decode(header, &pieces.concat());
                }
                if is_12_bit_jpeg(ts, header) {
                    return jpeg12_frame(header, &pieces.concat(), &stored_pi);
                }
                if matches!(ts, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51")
                    && spp == 3
                    && stored_pi == "RGB"
                {
                    let jpeg = pieces.concat();
                    if !jpeg_declares_ycc(&jpeg) {
                        return jpeg_rgb_as_stored(header, &jpeg);
                    }
                }
                let mut obj = header.clone();
                obj.put(DataElement::new_with_len(
                    tags::PIXEL_DATA,
                    VR::OB,
                    Length::UNDEFINED,
                    PixelFragmentSequence::new(vec![0u32], pieces),
                ));
                obj.put(DataElement::new(
                    tags::NUMBER_OF_FRAMES,
                    VR::IS,
                    PrimitiveValue::from("1"),
                ));
                // The per-frame functional groups describe every frame; the decoder would
                // insist they match the one frame it gets.
                obj.remove_element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
                let decoded = obj.decode_pixel_data().map_err(decode_error)?;
                from_decoded(&decoded, 0, &stored_pi, ts)
            }
        }
        FrameAccess::DecodeOnRequest => {
            let decoded = header
                .decode_pixel_data_frame(n - 1)
                .map_err(decode_error)?;
            let mut f = from_decoded(&decoded, 0, &stored_pi, ts)?;
            if ts == transcode::EXPLICIT_BE && f.bits_allocated == 32 {
                // Big-endian Pixel Data is read as OW: 16-bit words, each swapped to native
                // order, which leaves the two halves of a 32-bit sample in big-endian order.
                for w in f.data.chunks_exact_mut(4) {
                    w.rotate_left(2);
                }
            }
            Ok(f)
        }
    }
}

/// Frame `n` (1-based) decoded to native little-endian samples: the decoded form of WADO-RS
/// frames and pixel data, through the same decoder path as rendering.
pub fn decoded_samples(path: &Path, rec: &InstanceRecord, n: u32) -> Result<Vec<u8>, RenderError> {
    let header = read_header(path, rec)?;
    Ok(frame(path, rec, &header, n)?.data)
}
