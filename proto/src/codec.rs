//! The gRPC codec of the generated services and clients: tonic-prost's, except that a body
//! that does not decode is `INVALID_ARGUMENT` (the caller sent it) rather than tonic-prost's
//! `INTERNAL`, which would blame the server and invite a retry of the same bytes.
//! Authentication is not affected: the authority's interceptors read the request headers
//! before any body is decoded.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// `application/grpc+proto` through prost (see the module docs).
#[derive(Debug, Clone)]
pub struct TollgateCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for TollgateCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for TollgateCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = TollgateDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        TollgateDecoder { _pd: PhantomData }
    }
}

/// Decodes `U`; a malformed body is `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct TollgateDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for TollgateDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "the message is not a valid {}: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
