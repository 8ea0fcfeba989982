import { describe, it, expect } from 'vitest';
import { parseCsv, toCsv, parseDeviceCsv, secretsCsv } from './csv.js';

describe('parseCsv', () => {
  it('splits rows and fields', () => {
    expect(parseCsv('a,b,c\n1,2,3')).toEqual([['a', 'b', 'c'], ['1', '2', '3']]);
  });
  it('skips empty lines and handles CRLF and a trailing newline', () => {
    expect(parseCsv('\r\na,b\r\n\r\n\nc,d\r\n')).toEqual([['a', 'b'], ['c', 'd']]);
    expect(parseCsv('')).toEqual([]);
    expect(parseCsv('\n\n')).toEqual([]);
  });
  it('reads quoted fields with commas, quotes and newlines', () => {
    expect(parseCsv('"a,1","say ""hi""","two\nlines"\nx')).toEqual([['a,1', 'say "hi"', 'two\nlines'], ['x']]);
    expect(parseCsv('""')).toEqual([['']]);
  });
  it('keeps empty fields', () => {
    expect(parseCsv('a,,c\n,')).toEqual([['a', '', 'c'], ['', '']]);
  });
  it('drops a byte order mark', () => {
    expect(parseCsv('\uFEFFid,name')).toEqual([['id', 'name']]);
  });
});

describe('toCsv', () => {
  it('quotes only what needs it and round-trips', () => {
    const rows = [['id', 'name'], ['d1', 'a, "b"'], ['d2', 'x\ny'], ['d3', ' pad']];
    const text = toCsv(rows);
    expect(text.split('\r\n')[1]).toBe('d1,"a, ""b"""');
    expect(parseCsv(text)).toEqual(rows);
  });
  it('writes secrets with a header', () => {
    expect(secretsCsv([{ id: 'd1', name: 'D 1', tenant: 't', secret: 's' }])).toBe('id,name,tenant,secret\r\nd1,D 1,t,s\r\n');
  });
});

describe('parseDeviceCsv', () => {
  it('reads rows with or without a header', () => {
    const want = [{ id: 'd1', name: 'One', tenant: 'acme' }, { id: 'd2', name: 'Two', tenant: 'acme' }];
    expect(parseDeviceCsv('id,name,tenant\nd1,One,acme\nd2,Two,acme\n').devices).toEqual(want);
    expect(parseDeviceCsv('d1,One,acme\n\nd2,Two,acme').devices).toEqual(want);
    expect(parseDeviceCsv('ID,Name,Tenant\nd1,One,acme').devices.length).toBe(1);
  });
  it('fills name and tenant from the id and the default tenant', () => {
    expect(parseDeviceCsv('d1\nd2,,other', 'acme').devices).toEqual([
      { id: 'd1', name: 'd1', tenant: 'acme' }, { id: 'd2', name: 'd2', tenant: 'other' },
    ]);
  });
  it('reports bad lines by number', () => {
    const r = parseDeviceCsv('id,name,tenant\nbad id,x,acme\nd1,x,\nd2,"quoted, name",acme\nd2,y,acme');
    expect(r.devices).toEqual([{ id: 'd2', name: 'quoted, name', tenant: 'acme' }]);
    expect(r.errors).toEqual(['line 2: invalid device id "bad id"', 'line 3: no tenant for d1', 'line 5: device d2 appears twice']);
  });
});
