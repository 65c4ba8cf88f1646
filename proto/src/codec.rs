//! The codec of the node channel's services: prost, as tonic's default, but with small
//! initial buffers.
//!
//! tonic gives every stream an encode and a decode buffer of `buffer_size` bytes (8 KiB by
//! default), allocated when the stream starts and kept for its life. A node's control stream
//! lives for days and carries messages of a few dozen bytes (heartbeats, acks, commands), and
//! the panel holds one per node: 16 KiB each would be the largest part of a connected node's
//! memory. The buffers grow to fit any larger message (a file chunk reserves its whole size
//! at once either way), so a small start costs transfers nothing.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a stream's encode and decode buffers.
pub const BUFFER_SIZE: usize = 512;
/// Encoded bytes a response stream gathers before handing them to HTTP/2 (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers; named by the generated code.
#[derive(Debug)]
pub struct NodeCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for NodeCodec<T, U> {
    fn default() -> Self {
        NodeCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for NodeCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
