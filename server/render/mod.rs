//! Rendered images and thumbnails (PS3.18 8.3.5, 10.4.1.1.3-4): one frame of a stored instance
//! through the PS3.3 C.11 pixel pipeline to JPEG, PNG or GIF.
//!
//! [`render`] is blocking and CPU-bound: callers run it through a [`Gate`], which bounds the
//! rendering threads to the cores and the queue behind them.

pub mod jpeg12;
pub mod lut;
pub mod output;
pub mod params;
pub mod pixels;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::dicom::parse::FrameAccess;
use crate::error::Error;
use crate::store::records::InstanceRecord;
use params::{DEFAULT_QUALITY, Format, Params};

/// Why an instance could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Not an image (SR, waveform, RT objects without pixels).
    #[error("this instance cannot be rendered: {0}")]
    NotImage(String),
    /// An image this server cannot decode or present.
    #[error("this instance cannot be rendered: {0}")]
    Unsupported(String),
    /// The stored pixel data is damaged or inconsistent.
    #[error("this instance cannot be rendered: {0}")]
    Decode(String),
    #[error("frame {0} does not exist: the instance has {1} frame(s)")]
    NoFrame(u32, u32),
    #[error("{0}")]
    TooLarge(String),
    #[error("query parameter viewport: {0}")]
    BadViewport(String),
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Decode(ref why) => {
                tracing::warn!(reason = %why, "rendering failed");
                Error::NotAcceptable(e.to_string())
            }
            RenderError::NotImage(_) | RenderError::Unsupported(_) => {
                Error::NotAcceptable(e.to_string())
            }
            RenderError::NoFrame(..) => Error::NotFound(e.to_string()),
            RenderError::TooLarge(_) => Error::PayloadTooLarge(e.to_string()),
            RenderError::BadViewport(_) => Error::BadRequest(e.to_string()),
        }
    }
}

/// What to render: a frame (`None`: the Representative Frame Number, else the first), the
/// parameters and the output format.
#[derive(Debug, Clone)]
pub struct Job {
    pub frame: Option<u32>,
    pub params: Params,
    pub format: Format,
    /// Refuse before decoding when Rows×Columns×frames×samples×bytes exceeds this.
    pub max_decoded_bytes: u64,
}

/// Renders one frame of a stored instance (blocking).
pub fn render(path: &Path, rec: &InstanceRecord, job: &Job) -> Result<Vec<u8>, RenderError> {
    if matches!(rec.frames, FrameAccess::None) {
        return Err(RenderError::NotImage(format!(
            "it has no pixel data (SOP Class {})",
            rec.sop_class
        )));
    }
    // The size check reads only the header, even for instances decoded whole.
    let small = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path);
    let header = match (&rec.frames, small) {
        (FrameAccess::DecodeOnRequest, Ok(h)) => {
            check_size(&h, job.max_decoded_bytes)?;
            pixels::read_header(path, rec)?
        }
        (_, Ok(h)) => {
            check_size(&h, job.max_decoded_bytes)?;
            h
        }
        (_, Err(e)) => {
            return Err(RenderError::Decode(format!(
                "cannot read the instance: {e}"
            )));
        }
    };
    let geometry = pixels::Geometry::of(&header)
        .ok_or_else(|| RenderError::NotImage("it has no Rows/Columns".into()))?;
    let n = match job.frame {
        Some(n) if n == 0 || n > geometry.frames => {
            return Err(RenderError::NoFrame(n, geometry.frames));
        }
        Some(n) => n,
        None => lut::representative_frame(&header, geometry.frames),
    };
    let frame = pixels::frame(path, rec, &header, n)?;
    let img = lut::to_image8(&frame, &header, n, job.params.window.as_ref())?;
    let plan = output::plan(img.width, img.height, job.params.viewport.as_ref())?;
    let img = output::apply(img, &plan)?;
    output::encode(
        &img,
        job.format,
        job.params.quality.unwrap_or(DEFAULT_QUALITY),
    )
}

fn check_size(header: &dicom_object::InMemDicomObject, cap: u64) -> Result<(), RenderError> {
    if let Some(g) = pixels::Geometry::of(header) {
        let bytes = g.decoded_bytes();
        if bytes > cap {
            return Err(RenderError::TooLarge(format!(
                "the decoded image would take {bytes} bytes ({}×{}, {} frame(s), {} sample(s) of {} bits), \
                 over the server's limit of {cap} bytes (render_max_decoded_bytes)",
                g.cols, g.rows, g.frames, g.spp, g.bits_allocated
            )));
        }
    }
    Ok(())
}

/// Bounds rendering: at most one render per core at a time, and a queue of at most
/// `max_waiting` requests behind them; beyond that, 503 with `Retry-After`.
pub struct Gate {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Gate {
    pub fn new(workers: usize, max_waiting: usize) -> Gate {
        Gate {
            permits: Semaphore::new(workers.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A gate sized to the machine: one worker per core, 16 waiting per core.
    pub fn for_cores() -> Gate {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Gate::new(cores, cores * 16)
    }

    /// Runs blocking work `f` on the blocking pool once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Busy {
                message: "the server is busy rendering images; retry shortly".into(),
                retry_after: 1,
            });
        }
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|e| Error::internal(format!("render gate closed: {e}")))?;
        Ok(actix_web::web::block(f).await?)
    }

    /// Runs `f` on this (blocking) thread once a permit is free: for work already off the
    /// executor, such as the parts of a streamed multipart response.
    pub fn blocking<T>(&self, f: impl FnOnce() -> T) -> T {
        let permit = tokio::runtime::Handle::current().block_on(self.permits.acquire());
        let out = f();
        drop(permit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[actix_web::test]
    async fn a_full_render_queue_answers_busy_with_retry_after() {
        let gate = Arc::new(Gate::new(1, 1));
        // A holds the only permit; B waits behind it; C finds the queue full.
        let a = actix_web::rt::spawn({
            let g = gate.clone();
            async move {
                g.run(|| std::thread::sleep(Duration::from_millis(300)))
                    .await
            }
        });
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let b = actix_web::rt::spawn({
            let g = gate.clone();
            async move { g.run(|| 2).await }
        });
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        match gate.run(|| 3).await {
            Err(Error::Busy { retry_after, .. }) => assert!(retry_after >= 1),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(a.await.unwrap().is_ok());
        assert_eq!(b.await.unwrap().unwrap(), 2);
        // The queue drained: work is accepted again.
        assert_eq!(gate.run(|| 4).await.unwrap(), 4);
    }
}
