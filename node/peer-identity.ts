// The identity a connection proved: the spiffe:// URI SAN of the peer's certificate, when the
// TLS handshake verified one. Plaintext connections prove nothing and get an empty identity.

import type { Channel } from '../transport/channel.js';

export function peerIdentity(channel: Channel): string {
  const cert = channel.peerCertificate();
  if (!cert?.subjectaltname) return '';
  for (const part of cert.subjectaltname.split(', ')) {
    if (part.startsWith('URI:spiffe://')) return part.slice(4);
  }
  return '';
}
