//! The sensitive-word list loader (`FILTER_WORDLIST_PATH`, reloaded on
//! change): any bytes are a list or an error naming the line, never a
//! panic; a list that loads builds its matcher, which then checks and masks
//! the same bytes read as text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = im_filter::WordList::parse(data) else { return };
    let filter = im_filter::Filter::new(&list);
    let text = String::from_utf8_lossy(data);
    let matches = filter.find(&text);
    let _ = im_filter::mask(&text, &matches);
});
