// Calls to the server: /api (JSON) and /dicom-web (DICOM JSON), always with the session cookie
// (same origin). No token is ever kept in localStorage or sessionStorage.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    /** Seconds to wait (from Retry-After on 429/503), or undefined. */
    this.retryAfter = retryAfter;
  }
}

async function request(method, url, body, accept = 'application/json') {
  const opts = { method, credentials: 'same-origin', headers: { Accept: accept } };
  if (method !== 'GET') {
    // Cookie-authenticated changes need a JSON body (the server's CSRF rule).
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body ?? {});
  }
  let r;
  try {
    r = await fetch(url, opts);
  } catch (e) {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  }
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const wait = Number.parseInt(r.headers.get('Retry-After') ?? '', 10);
    throw new ApiError(r.status, data?.code ?? 'error', data?.message ?? `${r.status} ${r.statusText}`,
      Number.isFinite(wait) ? wait : undefined);
  }
  return data;
}

export const api = {
  get: (path) => request('GET', `/api${path}`),
  post: (path, body) => request('POST', `/api${path}`, body),
  put: (path, body) => request('PUT', `/api${path}`, body),
  patch: (path, body) => request('PATCH', `/api${path}`, body),
  del: (path, body) => request('DELETE', `/api${path}`, body),
};

/** QIDO-RS / WADO-RS metadata: `path` under /dicom-web, `params` an object or URLSearchParams. */
export function dicomweb(path, params) {
  const q = params ? `?${new URLSearchParams(params)}` : '';
  return request('GET', `/dicom-web${path}${q}`, undefined, 'application/dicom+json');
}

/** A URL under /dicom-web (for <img src>, downloads). */
export function dicomUrl(path, params) {
  const q = params ? `?${new URLSearchParams(params)}` : '';
  return `/dicom-web${path}${q}`;
}

// DICOM JSON helpers (PS3.18 Annex F).

/** First value of an attribute (8-hex tag), or undefined. */
export function value(obj, tag) {
  return obj?.[tag]?.Value?.[0];
}

/** Every value of an attribute. */
export function values(obj, tag) {
  return obj?.[tag]?.Value ?? [];
}

/** A person name as text: "Family, Given" per component group. The Ideographic and Phonetic
 * groups, when present, follow after "=" as in the stored value (a name like
 * `<img src=x onerror=alert(1)>` is three groups and must read back whole, literally). */
export function personName(obj, tag) {
  const v = value(obj, tag);
  const groups = typeof v === 'string' ? v.split('=') : [v?.Alphabetic ?? '', v?.Ideographic ?? '', v?.Phonetic ?? ''];
  const fmt = (g) => {
    const [family = '', given = ''] = g.split('^');
    return [family, given].filter(Boolean).join(', ');
  };
  while (groups.length > 1 && !groups[groups.length - 1]) groups.pop();
  return groups.map(fmt).join('=');
}

/** DICOM DA (YYYYMMDD) as a readable date, or '' when absent. */
export function formatDate(da) {
  if (!da || !/^\d{8}$/.test(da)) return da ?? '';
  const d = new Date(Date.UTC(+da.slice(0, 4), +da.slice(4, 6) - 1, +da.slice(6, 8)));
  return d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' });
}

export const TAG = {
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  PatientName: '00100010',
  PatientID: '00100020',
  AccessionNumber: '00080050',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  NumberOfFrames: '00280008',
};
