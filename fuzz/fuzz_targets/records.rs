//! `chorus ingest`'s record reader (NDJSON lines, JSON array elements):
//! no panic, no record past the bound, every byte accounted for.
#![no_main]

use chorus::mapping::stream::{Item, Records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let reader = std::io::BufReader::with_capacity(usize::from(mode % 16) + 1, rest);
    let mut records = Records::new(reader, 64, mode & 1 == 1);
    let mut buf = Vec::new();
    let mut count = 0;
    while let Some(item) = records.next(&mut buf).expect("reading memory cannot fail") {
        count += 1;
        assert!(count <= rest.len() + 1, "more records than bytes");
        if let Item::Record { .. } = item {
            assert!(buf.len() <= 65, "{} bytes kept", buf.len());
        }
    }
});
