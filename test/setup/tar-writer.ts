// Hand-made tar archives for layers that tar(1) will not write: members named `../x` or
// `/x`, links out of the root, binary extended attributes without setfattr(1). ustar
// headers; names and link names up to 100 bytes; PAX records before a member on request.

export interface RawTarEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev';
  mode?: number;
  uid?: number;
  gid?: number;
  devmajor?: number;
  devminor?: number;
  linkname?: string;
  data?: string | Buffer;
  /** PAX records for this member (e.g. `SCHILY.xattr.security.capability`), values as bytes. */
  pax?: Record<string, string | Buffer>;
}

const TYPE_FLAG = { file: '0', hardlink: '1', symlink: '2', chardev: '3', dir: '5', pax: 'x' } as const;
const octal = (n: number, width: number) => `${n.toString(8).padStart(width - 1, '0')}\0`;

/** `<length> <key>=<value>\n`, the length counting the whole record, its own digits too. */
function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

export function rawTar(entries: readonly RawTarEntry[]): Buffer {
  type Member = Omit<RawTarEntry, 'type'> & { type: keyof typeof TYPE_FLAG };
  const expanded = entries.flatMap((e): Member[] =>
    e.pax ? [{ name: 'PaxHeaders/x', type: 'pax', data: Buffer.concat(Object.entries(e.pax).map(([k, v]) => paxRecord(k, v))) }, { ...e, pax: undefined }] : [e],
  );
  const blocks: Buffer[] = [];
  for (const e of expanded) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    if (Buffer.byteLength(e.name) > 100 || Buffer.byteLength(e.linkname ?? '') > 100) throw new Error(`${e.name}: name too long for rawTar`);
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100);
    h.write(`${(e.mode ?? (e.type === 'dir' ? 0o755 : 0o644)).toString(8).padStart(7, '0')}\0`, 100);
    h.write(octal(e.uid ?? 0, 8), 108);
    h.write(octal(e.gid ?? 0, 8), 116);
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
    h.write('14000000000\0', 136);
    h.write('        ', 148);
    h.write(TYPE_FLAG[e.type], 156);
    if (e.linkname) h.write(e.linkname, 157, 100);
    h.write('ustar\0' + '00', 257);
    if (e.type === 'chardev') h.write(octal(e.devmajor ?? 0, 8), 329), h.write(octal(e.devminor ?? 0, 8), 337);
    const sum = h.reduce((a, b) => a + b, 0);
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
