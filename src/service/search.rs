//! Ranked search, one implementation for every resource that declares a
//! `SearchSpec`: full text first; when the first page finds nothing, the
//! trigram fallback (`fuzzy`). Pages are keyset by (score, id), their
//! tokens bound to the query, the filter and the mode.

use super::{Hit, Service, page, query, read::parse_filter};
use crate::{
    domain::{
        schema::{FieldKind, Resource},
        value::Value,
    },
    error::Error,
    store::{
        Scope,
        replica::for_shared_cache,
        search::{self, Mode, SearchQuery},
    },
};

/// Search page sizes and the longest query.
pub const SEARCH_DEFAULT_PAGE: usize = 20;
pub const SEARCH_MAX_PAGE: usize = 100;
pub const SEARCH_MAX_QUERY: usize = 1000;

#[derive(Clone, Copy, Debug, Default)]
pub struct SearchArgs<'a> {
    pub query: &'a str,
    pub filter: &'a str,
    pub page_size: i32,
    pub page_token: &'a str,
}

pub struct SearchPage {
    /// Best first.
    pub hits: Vec<Hit>,
    pub next_page_token: String,
    /// The trigram fallback produced this page.
    pub fuzzy: bool,
}

impl Service {
    pub async fn search(
        &self,
        scope: &Scope,
        res: &'static Resource,
        args: SearchArgs<'_>,
    ) -> Result<SearchPage, Error> {
        let Some(spec) = res.search else {
            return Err(Error::Internal(format!("{} declares no search", res.name)));
        };
        // Without a tsvector the trigram match is the only ranking.
        let first = if spec.vector.is_some() { Mode::FullText } else { Mode::Fuzzy };
        let text = args.query.trim();
        if text.is_empty() {
            return Err(Error::invalid("query", "query is required"));
        }
        if text.chars().count() > SEARCH_MAX_QUERY {
            return Err(Error::invalid(
                "query",
                format!("query is longer than {SEARCH_MAX_QUERY} characters"),
            ));
        }
        let limit = match args.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "page_size must not be negative")),
            0 => SEARCH_DEFAULT_PAGE,
            n => (n as usize).min(SEARCH_MAX_PAGE),
        };
        let filter = parse_filter(res, args.filter)?;
        let filter_text = filter.as_ref().map_or("", |f| f.canonical.as_str());
        let tenant = scope.tenant.to_string();
        let kind = format!("{}-search", res.name);
        let binding = |mode: Mode| page::binding(&[&kind, &tenant, text, filter_text, &format!("{mode:?}")]);
        let kinds = [FieldKind::Float, FieldKind::Uuid];
        let (mut mode, mut after) = (first, None);
        if !args.page_token.is_empty() {
            let decoded = page::decode(args.page_token, &binding(Mode::FullText), &kinds)
                .map(|k| (Mode::FullText, k))
                .or_else(|_| {
                    page::decode(args.page_token, &binding(Mode::Fuzzy), &kinds).map(|k| (Mode::Fuzzy, k))
                })?;
            mode = decoded.0;
            if let [Value::Float(s), Value::Uuid(id)] = decoded.1.as_slice() {
                after = Some((*s, *id));
            }
        }
        let run = async {
            let db = self.store.begin_read(scope).await?;
            let mut q = SearchQuery { text, filter: filter.as_ref().map(|f| &f.checked), after, limit, mode };
            let mut hits = search::search(&db, scope.tenant, res, &q).await?;
            if hits.is_empty() && after.is_none() && mode == Mode::FullText {
                q.mode = Mode::Fuzzy;
                hits = search::search(&db, scope.tenant, res, &q).await?;
            }
            db.commit().await?;
            let next_page_token = if hits.len() > limit {
                hits.truncate(limit);
                let last = hits.last().expect("limit >= 1");
                page::encode(&binding(q.mode), &[Value::Float(last.score), Value::Uuid(last.record.id())])
            } else {
                String::new()
            };
            Ok(SearchPage { hits, next_page_token, fuzzy: q.mode == Mode::Fuzzy })
        };
        match &self.cache {
            None => run.await,
            Some(c) => {
                let key = format!("search\n{}\n{}\n{limit}", binding(Mode::FullText), args.page_token);
                let compute = Box::pin(for_shared_cache(async {
                    run.await.map(|p: SearchPage| query::encode_search(&p))
                }));
                let bytes = c.query(scope, &[res], key, compute).await?;
                query::decode_search(res, &bytes)
            }
        }
    }
}
