//! Request bodies made of several buffers (an object's items as the
//! caller handed them over), sent one after another without first being
//! joined into one buffer: no copy of the object on the client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A body of `chunks`; the SDK can rebuild it for a retry (clones of
/// `Bytes` share the memory).
pub(crate) fn chunked(chunks: Vec<Bytes>) -> ByteStream {
    let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => ByteStream::from(one),
        Err(chunks) => ByteStream::new(SdkBody::retryable(move || {
            SdkBody::from_body_1_x(Chunks::new(chunks.clone()))
        })),
    }
}

struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks {
            chunks: chunks.into(),
            remaining,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.chunks.pop_front().map(|chunk| {
            this.remaining -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_in_order_and_replay() {
        let parts = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ];
        let stream = chunked(parts);
        assert_eq!(stream.size_hint(), (5, Some(5)));
        let body = stream.into_inner();
        let again = body.try_clone().expect("retryable");
        for b in [body, again] {
            let got = ByteStream::new(b).collect().await.unwrap().into_bytes();
            assert_eq!(&got[..], b"abcde");
        }
    }
}
