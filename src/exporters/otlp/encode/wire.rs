//! Protobuf's wire format, written by hand: varints, tags, length-delimited fields and their
//! sizes, and the pre-encoded `KeyValue` each label pair keeps.

/// Protobuf wire types.
pub(super) const VARINT: u32 = 0;
pub(super) const FIXED64: u32 = 1;
pub(super) const LEN: u32 = 2;

pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Every field number written here is below 16, so every tag is one byte.
pub(super) fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    debug_assert!(field < 16);
    out.push((field << 3 | wire) as u8);
}

/// Size of a length-delimited field whose contents are `len` bytes.
pub(super) fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Tag and length of a length-delimited field; its `len` bytes of contents follow.
pub(super) fn len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    key(out, field, LEN);
    varint(out, len as u64);
}

/// A string field, omitted when empty as proto3 does.
pub(super) fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        len_header(out, field, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

pub(super) fn string_size(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(s.len())
    }
}

pub(super) fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub(super) fn fixed64_size(v: u64) -> usize {
    if v != 0 {
        9
    } else {
        0
    }
}

pub(super) fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A double that proto3 leaves out at zero.
pub(super) fn nonzero_double(out: &mut Vec<u8>, field: u32, v: f64) {
    if v != 0.0 {
        double(out, field, v);
    }
}

pub(super) fn nonzero_double_size(v: f64) -> usize {
    if v != 0.0 {
        9
    } else {
        0
    }
}

pub(super) fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

pub(super) fn uint_size(v: u64) -> usize {
    if v != 0 {
        1 + varint_len(v)
    } else {
        0
    }
}

/// Size of a `KeyValue` with a string value.
pub(super) fn key_value_size(k: &str, v: &str) -> usize {
    // The value's oneof is set even for an empty string.
    string_size(k) + len_field(len_field(v.len()))
}

/// The fields of a `KeyValue` with a string value, `size` being `key_value_size`.
pub(super) fn key_value_body(out: &mut Vec<u8>, k: &str, v: &str) {
    string(out, 1, k);
    len_header(out, 2, len_field(v.len()));
    len_header(out, 1, v.len());
    out.extend_from_slice(v.as_bytes());
}

/// A `KeyValue` field with a string value.
pub(super) fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &str) {
    len_header(out, field, key_value_size(k, v));
    key_value_body(out, k, v);
}

/// A `KeyValue` with a string value as its length followed by its fields: the form
/// `LabelPair::otlp_key_value` keeps, so writing an attribute is a tag and one copy.
pub fn key_value_bytes(k: &str, v: &str) -> Box<[u8]> {
    let size = key_value_size(k, v);
    let mut out = Vec::with_capacity(varint_len(size as u64) + size);
    varint(&mut out, size as u64);
    key_value_body(&mut out, k, v);
    out.into_boxed_slice()
}
