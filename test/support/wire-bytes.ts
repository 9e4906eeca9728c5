// Hand-built protobuf wire bytes, independent of the codec under test.
export function varint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

export const key = (field: number, wire: number): number[] => varint(field * 8 + wire);

export const lenField = (field: number, body: number[] | string | Uint8Array): number[] => {
  const bytes = typeof body === 'string' ? [...Buffer.from(body, 'utf8')] : [...body];
  return [...key(field, 2), ...varint(bytes.length), ...bytes];
};

export const varintField = (field: number, v: number): number[] => [...key(field, 0), ...varint(v)];

export const fixed32Field = (field: number): number[] => [...key(field, 5), 0xde, 0xad, 0xbe, 0xef];
