// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html), the subset
// of the spec's list this project sends or has to understand from peers.
export enum Status {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  UNAUTHENTICATED = 16,
}

export interface StatusInfo {
  code: Status;
  details: string;
}

export function statusName(code: number): string {
  return Status[code] ?? `STATUS_${code}`;
}

/**
 * grpc-message on the wire (gRPC over HTTP/2 spec): UTF-8, with '%' and every byte outside
 * printable ASCII percent-encoded and everything else left as is. encodeURIComponent would also
 * escape '/', ':' and friends, which grpc-js (decodeURI) then shows to users still escaped.
 */
export function encodeGrpcMessage(details: string): string {
  let out = '';
  for (const byte of Buffer.from(details, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeGrpcMessage(raw: string | string[] | undefined): string {
  if (raw === undefined) return '';
  const s = Array.isArray(raw) ? raw.join(',') : raw;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The trailers (or trailers-only headers) that end a gRPC call with `code`. */
export function statusTrailers(code: Status, details: string): { 'grpc-status': string; 'grpc-message': string } {
  return { 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) };
}
