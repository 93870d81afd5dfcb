//! Reading response bodies with a bound, so a hostile registry cannot make the client buffer
//! without limit.

/// The largest JSON document (manifest, tag list, token) read into memory. The distribution
/// spec lets registries reject manifests over 4 MiB; clients may do the same.
pub(crate) const MAX_DOCUMENT: usize = 4 << 20;

/// Reads at most `limit` bytes of the body; the flag says whether the body was complete.
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    use futures::StreamExt as _;
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            let room = limit - out.len();
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, true))
}
