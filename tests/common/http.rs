//! Reading the daemon's metrics endpoint the way a scraper does.

/// `GET path` over plain HTTP/1.1; returns the status line and the body.
pub async fn http_get(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of an exposition line `name value`.
pub fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .parse()
        .unwrap()
}

/// The metrics page once `name` reaches `at_least` (the pass's summary line is written just
/// before the daemon counts the pass, so a scrape right after the line may be one behind);
/// the last page seen after `timeout_secs`.
pub async fn metrics_once(addr: &str, name: &str, at_least: f64, timeout_secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    loop {
        let body = http_get(addr, "/metrics").await.1;
        if sample(&body, name) >= at_least || std::time::Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
