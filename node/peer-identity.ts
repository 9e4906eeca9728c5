// The identity a link proved: the SPIFFE ID verified on its TLS connection (by our verifier for
// SPIFFE trust, or by OpenSSL for file CAs). Plaintext connections prove nothing: ''.

import { verifiedPeerId } from '../identity/connection-tls.js';
import type { Channel } from '../transport/channel.js';

export function peerIdentity(channel: Channel): string {
  return verifiedPeerId(channel.tlsSocket());
}
