//! Fuzz bodies shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`), so that CI exercises exactly what the fuzzer runs.

use cvlan_tables::layout::GenHeader;
use cvlan_tables::{FiveTuple, GenView};

use crate::parse::{parse_inner, parse_outer, parse_wg};

/// Outer IPv4/IPv6 + UDP parser: any input, no panic, offsets inside the input.
pub fn outer(data: &[u8]) {
    if let Ok(o) = parse_outer(data) {
        assert!(o.payload_off + o.payload_len <= data.len());
        let _ = parse_wg(&data[o.payload_off..o.payload_off + o.payload_len]);
    }
}

/// WireGuard message classifier.
pub fn wg(data: &[u8]) {
    if let crate::parse::WgMessage::Data { ct_len, .. } = parse_wg(data) {
        assert_eq!(ct_len + crate::parse::WG_DATA_HEADER, data.len());
    }
}

/// Inner IPv4/IPv6 5-tuple parser.
pub fn inner(data: &[u8]) {
    if let Ok(i) = parse_inner(data) {
        assert!(i.total_len <= data.len());
    }
}

/// Table generation image parser and every lookup on whatever it accepts (a corrupt or
/// hostile segment must not crash or hang a worker).
pub fn generation(data: &[u8]) {
    use zerocopy_free::header_capacity;
    let Some(cap) = header_capacity(data) else {
        return;
    };
    let Ok(view) = GenView::parse(data, cap) else {
        return;
    };
    let probe = |i: u32| {
        let x = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
        FiveTuple {
            src: x,
            dst: x.rotate_left(17),
            proto: 17,
            sport: i as u16,
            dport: 5000,
            tcp_flags: 0,
        }
    };
    for t in view.tenants.iter().take(16) {
        for i in 0..8u32 {
            let p = probe(i);
            let _ = view.route(t, p.src & 0xffff_ffff, false);
            let _ = view.route(t, p.dst, true);
            let _ = view.acl_classify(t, &p, false);
            let _ = view.acl_classify(t, &p, true);
        }
    }
    for r in 0..8u32 {
        let _ = view.keypair_by_receiver(r.wrapping_mul(0x0100_0193));
    }
}

mod zerocopy_free {
    use super::GenHeader;

    /// Reads `keypair_capacity` from a generation header without trusting the rest.
    pub fn header_capacity(data: &[u8]) -> Option<u32> {
        let off = core::mem::offset_of!(GenHeader, keypair_capacity);
        let b = data.get(off..off + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
