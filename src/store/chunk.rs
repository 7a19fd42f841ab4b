//! Gorilla-style sample chunks, as in Prometheus's head: timestamps as delta-of-delta with
//! the same bit buckets, values XOR-ed with the previous one. ~1.4 bytes per sample for
//! regular scrapes of slowly moving values.

/// Samples per chunk before it is closed (Prometheus uses 120).
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// Appends bits to a head chunk's bytes, most significant first.
struct BitWriter<'a> {
    bytes: &'a mut Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or there is none).
    used: &'a mut u8,
}

impl BitWriter<'_> {
    fn write_bit(&mut self, bit: bool) {
        if *self.used == 0 {
            self.bytes.push(0);
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (7 - *self.used);
        }
        *self.used = (*self.used + 1) % 8;
    }

    /// Writes the low `n` bits of `value`, most significant first, a byte at a time.
    fn write_bits(&mut self, value: u64, n: u8) {
        let mut left = n as u32;
        while left > 0 {
            if *self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - *self.used as u32;
            let take = free.min(left);
            let chunk = ((value >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            *self.used = ((*self.used as u32 + take) % 8) as u8;
            left -= take;
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Some(bit)
    }

    /// Reads `n` (≤ 64) bits, most significant first. The bits sit in the 16 bytes from the
    /// current one (at most 7 + 64 are needed), read as one big-endian word: chunk decoding
    /// was a quarter of a query's CPU, mostly this loop when it went a byte at a time.
    fn read_bits(&mut self, n: u8) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        let end = self.pos + n as usize;
        if end > self.bytes.len() * 8 {
            return None;
        }
        let byte = self.pos / 8;
        let word = match self.bytes.get(byte..byte + 16) {
            Some(w) => u128::from_be_bytes(w.try_into().ok()?),
            None => {
                // Near the end: the missing bytes read as zeros (never used: `end` fits).
                let mut w = [0u8; 16];
                let tail = &self.bytes[byte..];
                w[..tail.len()].copy_from_slice(tail);
                u128::from_be_bytes(w)
            }
        };
        let v = (word << (self.pos % 8)) >> (128 - u32::from(n));
        self.pos = end;
        Some(v as u64)
    }
}

/// Sign-extends the low `bits` bits of `v`.
fn sign_extend(v: u64, bits: u8) -> i64 {
    let shift = 64 - bits as u32;
    ((v << shift) as i64) >> shift
}

/// The chunk a series appends to. Its last sample's time and value are the series' own
/// (`MemSeries::last_t`, `last_v`), passed in rather than kept twice; the encoder's state is
/// kept here only, as a closed chunk needs none of it.
pub struct HeadChunk {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or there is none).
    used: u8,
    leading: u8,
    trailing: u8,
    pub count: u16,
    t_delta: i64,
}

/// The first sample's time, which opens a chunk's encoding as 64 bits (`fallback` when the
/// chunk is empty): not kept apart, as every series holds a chunk.
fn first_time(samples: &[u8], fallback: i64) -> i64 {
    samples
        .first_chunk::<8>()
        .map_or(fallback, |b| i64::from_be_bytes(*b))
}

impl Default for HeadChunk {
    fn default() -> Self {
        HeadChunk {
            bytes: Vec::new(),
            used: 0,
            // No leading/trailing window yet: the first XOR writes its own.
            leading: 0xff,
            trailing: 0,
            count: 0,
            t_delta: 0,
        }
    }
}

/// A full chunk: its bytes allocated exactly, with the sample count at their end, and the
/// last sample's time. 24 bytes besides the samples; the encoder's state is gone.
pub struct ClosedChunk {
    /// The encoded samples, then their count (two bytes, little-endian).
    bytes: Box<[u8]>,
    pub max_t: i64,
}

/// A chunk's samples and bounds, open or closed, for reading.
#[derive(Clone, Copy)]
pub struct ChunkView<'a> {
    bytes: &'a [u8],
    pub count: u16,
    pub min_t: i64,
    pub max_t: i64,
}

impl HeadChunk {
    pub fn is_full(&self) -> bool {
        self.count >= SAMPLES_PER_CHUNK
    }

    /// Bytes held (for reports).
    pub fn size(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends a sample after the series' last one, (`last_t`, `last_v`); `t` must not be
    /// below it (the caller checks).
    pub fn append(&mut self, t: i64, v: f64, last_t: i64, last_v: u64) {
        let vb = v.to_bits();
        let mut w = BitWriter {
            bytes: &mut self.bytes,
            used: &mut self.used,
        };
        match self.count {
            0 => {
                w.write_bits(t as u64, 64);
                w.write_bits(vb, 64);
            }
            1 => {
                let delta = t - last_t;
                w.write_bits(delta as u64, 64);
                self.t_delta = delta;
                self.write_value(vb ^ last_v);
            }
            _ => {
                let delta = t - last_t;
                let dod = delta - self.t_delta;
                match dod {
                    0 => w.write_bit(false),
                    -8191..=8192 => {
                        w.write_bits(0b10, 2);
                        w.write_bits(dod as u64, 14);
                    }
                    -65535..=65536 => {
                        w.write_bits(0b110, 3);
                        w.write_bits(dod as u64, 17);
                    }
                    -524287..=524288 => {
                        w.write_bits(0b1110, 4);
                        w.write_bits(dod as u64, 20);
                    }
                    _ => {
                        w.write_bits(0b1111, 4);
                        w.write_bits(dod as u64, 64);
                    }
                }
                self.t_delta = delta;
                self.write_value(vb ^ last_v);
            }
        }
        self.count += 1;
    }

    /// Writes a value as its XOR `x` with the one before.
    fn write_value(&mut self, x: u64) {
        let mut w = BitWriter {
            bytes: &mut self.bytes,
            used: &mut self.used,
        };
        if x == 0 {
            w.write_bit(false);
            return;
        }
        w.write_bit(true);
        let mut leading = x.leading_zeros() as u8;
        let trailing = x.trailing_zeros() as u8;
        // Leading zeros are stored in 5 bits.
        if leading >= 32 {
            leading = 31;
        }
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            w.write_bits(x >> self.trailing, sig);
        } else {
            w.write_bit(true);
            w.write_bits(leading as u64, 5);
            let sig = 64 - leading - trailing;
            // 64 significant bits are stored as 0 (6 bits cannot hold 64).
            w.write_bits((sig % 64) as u64, 6);
            w.write_bits(x >> trailing, sig);
            self.leading = leading;
            self.trailing = trailing;
        }
    }

    /// The samples so far, the last one at `last_t`.
    pub fn view(&self, last_t: i64) -> ChunkView<'_> {
        ChunkView {
            bytes: &self.bytes,
            count: self.count,
            min_t: first_time(&self.bytes, last_t),
            max_t: last_t,
        }
    }

    /// Closes the chunk, its last sample at `last_t`, leaving an empty one in its place.
    pub fn close(&mut self, last_t: i64) -> ClosedChunk {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.extend_from_slice(&self.count.to_le_bytes());
        *self = HeadChunk::default();
        ClosedChunk {
            bytes: bytes.into_boxed_slice(),
            max_t: last_t,
        }
    }
}

impl ClosedChunk {
    /// Bytes held (for reports).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn view(&self) -> ChunkView<'_> {
        let (samples, count) = self.bytes.split_last_chunk::<2>().unwrap_or((&[], &[0, 0]));
        ChunkView {
            bytes: samples,
            count: u16::from_le_bytes(*count),
            min_t: first_time(samples, self.max_t),
            max_t: self.max_t,
        }
    }
}

impl ChunkView<'_> {
    /// Decodes every sample, calling `f(t, v)` in time order.
    pub fn for_each(&self, mut f: impl FnMut(i64, f64)) {
        let mut r = BitReader {
            bytes: self.bytes,
            pos: 0,
        };
        let mut t: i64 = 0;
        let mut delta: i64 = 0;
        let mut v: u64 = 0;
        let (mut leading, mut trailing) = (0u8, 0u8);
        for i in 0..self.count {
            let ok = (|| -> Option<()> {
                match i {
                    0 => {
                        t = r.read_bits(64)? as i64;
                        v = r.read_bits(64)?;
                    }
                    _ => {
                        if i == 1 {
                            delta = r.read_bits(64)? as i64;
                        } else {
                            let dod = if !r.read_bit()? {
                                0
                            } else if !r.read_bit()? {
                                sign_extend(r.read_bits(14)?, 14)
                            } else if !r.read_bit()? {
                                sign_extend(r.read_bits(17)?, 17)
                            } else if !r.read_bit()? {
                                sign_extend(r.read_bits(20)?, 20)
                            } else {
                                r.read_bits(64)? as i64
                            };
                            delta += dod;
                        }
                        t += delta;
                        if r.read_bit()? {
                            if r.read_bit()? {
                                leading = r.read_bits(5)? as u8;
                                let mut sig = r.read_bits(6)? as u8;
                                if sig == 0 {
                                    sig = 64;
                                }
                                trailing = 64 - leading - sig;
                            }
                            let sig = 64 - leading - trailing;
                            let bits = r.read_bits(sig)?;
                            v ^= bits << trailing;
                        }
                    }
                }
                Some(())
            })();
            if ok.is_none() {
                return;
            }
            f(t, f64::from_bits(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `(t, v)` pairs as a series does, keeping its last time and value.
    fn fill(samples: &[(i64, f64)]) -> (HeadChunk, i64) {
        let mut c = HeadChunk::default();
        let (mut last_t, mut last_v) = (i64::MIN, 0u64);
        for &(t, v) in samples {
            c.append(t, v, last_t, last_v);
            (last_t, last_v) = (t, v.to_bits());
        }
        (c, last_t)
    }

    fn decoded(view: ChunkView<'_>) -> Vec<(i64, u64)> {
        let mut got = Vec::new();
        view.for_each(|t, v| got.push((t, v.to_bits())));
        got
    }

    #[test]
    fn round_trips_irregular_data_bit_exact_open_and_closed() {
        let vals = [
            0.0,
            1.0,
            1.0,
            -3.5,
            f64::NAN,
            f64::INFINITY,
            1e300,
            5e-324,
            crate::model::stale_nan(),
            42.0,
        ];
        let mut t = 1_700_000_000_000i64;
        let mut samples = Vec::new();
        for (i, v) in vals
            .iter()
            .cycle()
            .take(SAMPLES_PER_CHUNK as usize)
            .enumerate()
        {
            t += [15_000, 15_001, 14_999, 0, 1_000_000, 3][i % 6];
            samples.push((t, *v));
        }
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        // Every prefix reads back while open.
        for n in [1, 2, 3, 61, SAMPLES_PER_CHUNK as usize] {
            let (c, last_t) = fill(&samples[..n]);
            let view = c.view(last_t);
            assert_eq!(decoded(view), want[..n], "{n} samples");
            assert_eq!(
                (view.count as usize, view.min_t, view.max_t),
                (n, want[0].0, last_t)
            );
        }
        let (mut c, last_t) = fill(&samples);
        assert!(c.is_full());
        let closed = c.close(last_t);
        let view = closed.view();
        assert_eq!(decoded(view), want);
        assert_eq!(
            (view.count, view.min_t, view.max_t),
            (SAMPLES_PER_CHUNK, want[0].0, last_t)
        );
        // The head is empty again, ready for the next chunk.
        assert_eq!((c.count, c.size()), (0, 0));
        assert!(decoded(c.view(last_t)).is_empty());
    }

    #[test]
    fn regular_scrapes_are_small() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 5000, (i * 10) as f64))
            .collect();
        let (mut c, last_t) = fill(&samples);
        let closed = c.close(last_t);
        assert!(closed.size() < 120 * 3, "{} bytes", closed.size());
    }
}
