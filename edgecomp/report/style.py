"""The page's inline stylesheet (GitHub-like colors: green pass, red fail, amber inconclusive)."""

CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--pass:#1a7f37;--fail:#cf222e;--warn:#9a6700;
--blue:#0969da}
*{box-sizing:border-box}
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);margin:0;
background:#fff}
main{max-width:1080px;margin:0 auto;padding:28px 32px 48px}
header h1{font-size:24px;margin:0 0 4px;font-weight:600}
header .sub{color:var(--muted);font-size:13.5px}
h2{font-size:18px;margin:34px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line);font-weight:600}
h2 small{font-weight:400;color:var(--muted);font-size:13px;margin-left:8px}
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--bg);padding:1px 5px;
border-radius:4px;word-break:break-all}
.banner{display:flex;gap:22px;align-items:center;margin:20px 0 8px;padding:18px 22px;border-radius:10px;
border:1px solid;border-left-width:8px}
.banner.pass{background:#dafbe1;border-color:var(--pass)}.banner.fail{background:#ffebe9;border-color:var(--fail)}
.banner.warn{background:#fff8c5;border-color:#d4a72c}.banner.muted{background:var(--bg);border-color:var(--line)}
.verdict{font-size:30px;font-weight:700;letter-spacing:.5px;white-space:nowrap}
.banner.pass .verdict{color:var(--pass)}.banner.fail .verdict{color:var(--fail)}.banner.warn .verdict{color:var(--warn)}
.banner .why{font-size:14.5px}.banner .why ul{margin:4px 0 0;padding-left:18px}
.banner .exit{color:var(--muted);font-size:12.5px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:14px 0 0}
.tile{border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.tile .k{color:var(--muted);font-size:12.5px}.tile .v{font-size:22px;font-weight:600}
.tile .d{font-size:12.5px;color:var(--muted)}
.tiles.small{grid-template-columns:repeat(auto-fit,minmax(120px,1fr));gap:8px}.tiles.small .tile{padding:6px 12px}
.tiles.small .v{font-size:17px}
td.shape{white-space:nowrap}
.callout{margin:14px 0 0;padding:10px 14px;border-radius:8px;background:#fff8c5;border:1px solid #d4a72c;font-size:14px}
table{border-collapse:collapse;width:100%;font-size:14px;margin:6px 0}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-weight:600;font-size:12.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.3px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td .abs{display:block;color:var(--muted);font-size:12px}
tr.total td{font-weight:600;border-top:2px solid var(--line)}
tr.other td{color:var(--muted)}
.badge{display:inline-block;padding:1px 9px;border-radius:12px;font-size:12px;font-weight:600;white-space:nowrap}
.badge.pass{background:#dafbe1;color:var(--pass)}.badge.fail{background:#ffebe9;color:var(--fail)}
.badge.warn{background:#fff8c5;color:var(--warn)}.badge.muted{background:var(--bg);color:var(--muted)}
.up{color:var(--pass)}.down{color:var(--fail)}.muted{color:var(--muted)}
.rank{display:flex;align-items:center;gap:8px;white-space:nowrap}
.meter{position:relative;width:110px;height:10px;background:#eaeef2;border-radius:5px;overflow:hidden;flex:none}
.meter i{position:absolute;left:0;top:0;bottom:0;background:var(--blue);border-radius:5px}
.meter b{position:absolute;top:-2px;bottom:-2px;width:2px;background:var(--fail)}
.acc{position:relative;width:150px;height:10px;background:#eaeef2;border-radius:5px;display:inline-block}
.acc i{position:absolute;left:0;top:0;bottom:0;background:#2da44e;border-radius:5px}
figure{margin:14px 0;text-align:center}figure img{max-width:100%;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:13px;margin-top:4px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.note{color:var(--muted);font-size:13px;margin:4px 0}
ul.notes li{margin:4px 0;font-size:14px}
details{margin-top:10px}summary{cursor:pointer;color:var(--muted)}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""
