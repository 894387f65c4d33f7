//! Query results in their cached form (`domain::codec`): a list page or a
//! search page, records included, so a cached result is one `GET` and one
//! decode. A result that does not decode is an internal error, not a
//! silent miss: the cache checked its format version already.

use super::{Hit, Page, SearchPage};
use crate::{
    domain::{
        codec::{Reader, Writer},
        schema::Resource,
    },
    error::Error,
};

fn undecodable(what: &str) -> Error {
    Error::Internal(format!("cached {what} undecodable"))
}

pub fn encode_page(p: &Page) -> Vec<u8> {
    let mut w = Writer::with_capacity(512 + 1024 * p.items.len());
    w.str(&p.next_page_token);
    w.i64(p.total_size);
    w.u32(p.items.len() as u32);
    for r in &p.items {
        w.record(r);
    }
    w.buf
}

pub fn decode_page(res: &'static Resource, bytes: &[u8]) -> Result<Page, Error> {
    let read = || {
        let mut r = Reader::new(bytes);
        let next_page_token = r.str()?.to_owned();
        let total_size = r.i64()?;
        let n = r.u32()? as usize;
        let items = (0..n).map(|_| r.record(res)).collect::<Option<Vec<_>>>()?;
        r.is_empty().then_some(Page { items, next_page_token, total_size })
    };
    read().ok_or_else(|| undecodable("page"))
}

pub fn encode_search(p: &SearchPage) -> Vec<u8> {
    let mut w = Writer::with_capacity(512 + 1024 * p.hits.len());
    w.str(&p.next_page_token);
    w.u8(u8::from(p.fuzzy));
    w.u32(p.hits.len() as u32);
    for h in &p.hits {
        w.f64(h.score);
        w.opt_str(h.snippet.as_deref());
        w.record(&h.record);
    }
    w.buf
}

pub fn decode_search(res: &'static Resource, bytes: &[u8]) -> Result<SearchPage, Error> {
    let read = || {
        let mut r = Reader::new(bytes);
        let next_page_token = r.str()?.to_owned();
        let fuzzy = r.u8()? != 0;
        let n = r.u32()? as usize;
        let mut hits = Vec::with_capacity(n.min(1000));
        for _ in 0..n {
            let score = r.f64()?;
            let snippet = r.opt_str()?.map(str::to_owned);
            hits.push(Hit { record: r.record(res)?, score, snippet });
        }
        r.is_empty().then_some(SearchPage { hits, next_page_token, fuzzy })
    };
    read().ok_or_else(|| undecodable("search page"))
}
