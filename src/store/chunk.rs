//! Gorilla-style sample chunks, as in Prometheus's head: timestamps as delta-of-delta with
//! the same bit buckets, values XOR-ed with the previous one. ~1.4 bytes per sample for
//! regular scrapes of slowly moving values.

/// Samples per chunk before it is closed (Prometheus uses 120).
pub const SAMPLES_PER_CHUNK: u16 = 120;

#[derive(Default, Clone)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (7 - self.used);
        }
        self.used = (self.used + 1) % 8;
    }

    /// Writes the low `n` bits of `value`, most significant first, a byte at a time.
    fn write_bits(&mut self, value: u64, n: u8) {
        let mut left = n as u32;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used as u32;
            let take = free.min(left);
            let chunk = ((value >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            self.used = ((self.used as u32 + take) % 8) as u8;
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

/// A chunk being appended to, or a closed one.
#[derive(Clone, Default)]
pub struct Chunk {
    bits: BitWriter,
    pub count: u16,
    pub min_t: i64,
    pub max_t: i64,
    // Encoder state.
    t_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
}

impl Chunk {
    pub fn new() -> Self {
        Chunk {
            leading: 0xff,
            ..Default::default()
        }
    }

    pub fn is_full(&self) -> bool {
        self.count >= SAMPLES_PER_CHUNK
    }

    /// Bytes of encoded data held.
    pub fn size(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Releases spare capacity once the chunk is closed.
    pub fn shrink(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    /// Appends a sample; `t` must not be below the last one (the caller checks).
    pub fn append(&mut self, t: i64, v: f64) {
        let vb = v.to_bits();
        match self.count {
            0 => {
                self.bits.write_bits(t as u64, 64);
                self.bits.write_bits(vb, 64);
                self.min_t = t;
            }
            1 => {
                let delta = t - self.max_t;
                self.bits.write_bits(delta as u64, 64);
                self.t_delta = delta;
                self.write_value(vb);
            }
            _ => {
                let delta = t - self.max_t;
                let dod = delta - self.t_delta;
                match dod {
                    0 => self.bits.write_bit(false),
                    -8191..=8192 => {
                        self.bits.write_bits(0b10, 2);
                        self.bits.write_bits(dod as u64, 14);
                    }
                    -65535..=65536 => {
                        self.bits.write_bits(0b110, 3);
                        self.bits.write_bits(dod as u64, 17);
                    }
                    -524287..=524288 => {
                        self.bits.write_bits(0b1110, 4);
                        self.bits.write_bits(dod as u64, 20);
                    }
                    _ => {
                        self.bits.write_bits(0b1111, 4);
                        self.bits.write_bits(dod as u64, 64);
                    }
                }
                self.t_delta = delta;
                self.write_value(vb);
            }
        }
        self.max_t = t;
        self.last_v = vb;
        self.count += 1;
    }

    fn write_value(&mut self, vb: u64) {
        let x = vb ^ self.last_v;
        if x == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);
        let mut leading = x.leading_zeros() as u8;
        let trailing = x.trailing_zeros() as u8;
        // Leading zeros are stored in 5 bits.
        if leading >= 32 {
            leading = 31;
        }
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.bits.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.bits.write_bits(x >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.bits.write_bit(true);
            self.bits.write_bits(leading as u64, 5);
            let sig = 64 - leading - trailing;
            // 64 significant bits are stored as 0 (6 bits cannot hold 64).
            self.bits.write_bits((sig % 64) as u64, 6);
            self.bits.write_bits(x >> trailing, sig);
        }
    }

    /// Decodes every sample, calling `f(t, v)` in time order.
    pub fn for_each(&self, mut f: impl FnMut(i64, f64)) {
        let mut r = BitReader {
            bytes: &self.bits.bytes,
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

    #[test]
    fn round_trips_irregular_data_bit_exact() {
        let mut c = Chunk::new();
        let mut want = Vec::new();
        let mut t = 1_700_000_000_000i64;
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
        for (i, v) in vals
            .iter()
            .cycle()
            .take(SAMPLES_PER_CHUNK as usize)
            .enumerate()
        {
            t += [15_000, 15_001, 14_999, 0, 1_000_000, 3][i % 6];
            c.append(t, *v);
            want.push((t, v.to_bits()));
        }
        let mut got = Vec::new();
        c.for_each(|t, v| got.push((t, v.to_bits())));
        assert_eq!(got, want);
        assert!(c.is_full());
    }

    #[test]
    fn regular_scrapes_are_small() {
        let mut c = Chunk::new();
        for i in 0..120 {
            c.append(1_700_000_000_000 + i * 5000, (i * 10) as f64);
        }
        c.shrink();
        assert!(c.size() < 120 * 3, "{} bytes", c.size());
    }
}
