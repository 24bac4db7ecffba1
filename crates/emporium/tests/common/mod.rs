//! What the binary's tests share.

/// A port nothing listens on right now (the OS's pick; free again once the probe closes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Every item of a paged list, following its cursors; `request` makes the first page's request
/// (the limit and cursor are added here).
pub async fn every_item(request: impl Fn() -> reqwest::RequestBuilder) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut next = request().query(&[("limit", "50")]);
        if let Some(cursor) = &cursor {
            next = next.query(&[("cursor", cursor)]);
        }
        let page: serde_json::Value = next
            .send()
            .await
            .expect("a page")
            .json()
            .await
            .expect("JSON");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}
