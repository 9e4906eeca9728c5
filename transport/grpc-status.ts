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

/** grpc-message is percent-encoded on the wire (gRPC over HTTP/2 spec). */
export function encodeGrpcMessage(details: string): string {
  return encodeURIComponent(details);
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
