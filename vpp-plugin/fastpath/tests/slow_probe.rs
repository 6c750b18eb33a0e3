#[test]
fn probe_slow() {
    let data = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/table_generation/two_tenants")).unwrap();
    let mut m = data.clone();
    for i in 0..m.len() {
        for v in [data[i] ^ 1, data[i] ^ 0x80, 0xff] {
            m[i] = v;
            let t = std::time::Instant::now();
            cvlan_fastpath::fuzzing::generation(&m);
            let e = t.elapsed();
            if e > std::time::Duration::from_millis(5) { eprintln!("slow at {i} val {v:#x}: {e:?}"); }
        }
        m[i] = data[i];
    }
}
