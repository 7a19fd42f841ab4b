//! What a pushed request will cost once decoded, known before it is decoded.
//!
//! A protobuf body's size says little about its decoded size: two bytes make an empty
//! `ResourceMetrics`, which prost decodes into a struct of about a hundred bytes, and a packed
//! varint of one byte becomes a `u64`. So a 4 MiB body can decode to hundreds of MiB. The
//! wire format is walked here (without recursion: nesting depth is the sender's to choose)
//! and every length-delimited field is charged as the struct it may become, and its bytes as
//! the widest thing they may decode to. Requests whose estimate is over the budget are
//! refused, and the estimates of requests being decoded at once share one pool.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Charged for each length-delimited field: about the largest OTLP message struct (a
/// `Metric` or a `HistogramDataPoint`) with its slot in the parent's `Vec`.
pub const MESSAGE_COST: usize = 128;
/// Per byte of a length-delimited field that is no message (a string, bytes, or a packed
/// varint, whose bytes may each become an 8-byte integer).
const BYTE_COST: usize = 8;
/// Deeper than this, the decoder refuses anyway (prost's recursion limit is 100).
const MAX_DEPTH: usize = 100;

/// The decoded size `body` may reach, or `None` if it is no valid protobuf message.
///
/// One pass, depth first, holding only the ends of the enclosing fields: every
/// length-delimited field is taken for a message and walked; when its bytes turn out not to
/// be one (a string, bytes, a packed field), what is left of it is charged as bytes.
pub fn decoded_size(body: &[u8]) -> Option<usize> {
    let mut cost = 0usize;
    let mut enclosing: Vec<usize> = Vec::new();
    let mut end = body.len();
    let mut i = 0;
    loop {
        if i >= end {
            match enclosing.pop() {
                Some(outer) => {
                    end = outer;
                    continue;
                }
                None => break,
            }
        }
        match field(&body[i..end]) {
            Some(Field::Scalar(n)) => i += n,
            Some(Field::Delimited { header, len }) => {
                cost = cost.saturating_add(MESSAGE_COST);
                let start = i + header;
                if len > 0 && enclosing.len() < MAX_DEPTH {
                    enclosing.push(end);
                    end = start + len;
                    i = start;
                } else {
                    cost = cost.saturating_add(len.saturating_mul(BYTE_COST));
                    i = start + len;
                }
            }
            // The top level must be a message; below, the enclosing field was a string,
            // bytes or a packed field.
            None if enclosing.is_empty() => return None,
            None => {
                cost = cost.saturating_add((end - i).saturating_mul(BYTE_COST));
                i = end;
            }
        }
    }
    Some(cost.saturating_add(body.len()))
}

enum Field {
    /// A varint or fixed-size field of this many bytes, tag included.
    Scalar(usize),
    /// A length-delimited field: its tag and length take `header` bytes.
    Delimited { header: usize, len: usize },
}

/// The field starting `b`, if it is a well-formed one that fits in `b`.
fn field(b: &[u8]) -> Option<Field> {
    let (tag, n) = varint(b)?;
    if tag >> 3 == 0 {
        return None;
    }
    let size = match tag & 7 {
        0 => n + varint(&b[n..])?.1,
        1 => n + 8,
        5 => n + 4,
        2 => {
            let (len, m) = varint(&b[n..])?;
            let len = usize::try_from(len).ok()?;
            if len > b.len() - n - m {
                return None;
            }
            return Some(Field::Delimited { header: n + m, len });
        }
        _ => return None,
    };
    (size <= b.len()).then_some(Field::Scalar(size))
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Decoded bytes in flight across a receiver's requests.
#[derive(Clone)]
pub struct DecodeBudget {
    /// Most one request may decode to.
    pub per_request: usize,
    /// Shared by the requests being decoded at once, in KiB.
    pool: Arc<Semaphore>,
    pool_kib: usize,
}

/// Why a request cannot be decoded now.
pub enum Denied {
    /// Its estimate is over the per-request budget.
    TooLarge(usize),
    /// No valid protobuf.
    Malformed,
}

impl DecodeBudget {
    /// A budget of `per_request` bytes for one request, `pool` for all decoding at once.
    pub fn new(per_request: usize, pool: usize) -> Self {
        let pool_kib = (pool.max(per_request) >> 10).clamp(1, Semaphore::MAX_PERMITS);
        DecodeBudget {
            per_request,
            pool: Arc::new(Semaphore::new(pool_kib)),
            pool_kib,
        }
    }

    /// Waits for room to decode a body whose [`decoded_size`] is `estimate`; the permit is
    /// the room, held until the decoded request is dropped.
    pub async fn admit(&self, estimate: Option<usize>) -> Result<OwnedSemaphorePermit, Denied> {
        let estimate = estimate.ok_or(Denied::Malformed)?;
        if estimate > self.per_request {
            return Err(Denied::TooLarge(estimate));
        }
        let kib = (estimate >> 10).clamp(1, self.pool_kib) as u32;
        self.pool
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Denied::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    use prost::Message;

    #[test]
    fn empty_messages_cost_what_they_decode_to() {
        // 100,000 empty ResourceMetrics: 200 KB on the wire.
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics::default(); 100_000],
        };
        let body = req.encode_to_vec();
        assert_eq!(body.len(), 200_000);
        let est = decoded_size(&body).expect("valid");
        let decoded = 100_000 * std::mem::size_of::<ResourceMetrics>();
        assert!(est >= decoded, "estimate {est} under the decoded {decoded}");
    }

    #[test]
    fn malformed_and_deep_bodies() {
        assert_eq!(decoded_size(&[0x0a, 0x05, 0x01]), None);
        assert_eq!(decoded_size(&[0x07]), None);
        assert_eq!(decoded_size(&[]), Some(0));
        // 200,000 levels of nesting are walked without recursion.
        let mut headers = Vec::new();
        let mut inner = 0u64;
        for _ in 0..200_000 {
            let mut h = vec![0x0a];
            let mut len = inner;
            loop {
                let byte = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    h.push(byte);
                    break;
                }
                h.push(byte | 0x80);
            }
            inner += h.len() as u64;
            headers.push(h);
        }
        let body: Vec<u8> = headers.into_iter().rev().flatten().collect();
        assert!(decoded_size(&body).is_some());
    }
}
