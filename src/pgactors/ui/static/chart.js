// A small line chart on a canvas: the last `capacity` values, redrawn on each push.
export class RateChart {
  constructor(canvas, capacity = 120) {
    this.canvas = canvas;
    this.capacity = capacity;
    this.values = [];
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > this.capacity) this.values.shift();
    this.canvas.dataset.points = String(this.values.length);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 720;
    const height = canvas.clientHeight || 180;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    const pad = {left: 48, right: 8, top: 10, bottom: 18};
    const top = Math.max(1, ...this.values) * 1.1;
    ctx.strokeStyle = "#dde1e8";
    ctx.fillStyle = "#6b7385";
    ctx.font = "11px system-ui, sans-serif";
    for (let i = 0; i <= 4; i++) {
      const y = pad.top + (height - pad.top - pad.bottom) * (1 - i / 4);
      ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(width - pad.right, y); ctx.stroke();
      ctx.fillText((top * i / 4).toFixed(top < 10 ? 1 : 0), 4, y + 4);
    }
    ctx.fillText("writes/s, last " + this.capacity + " samples", pad.left, height - 4);
    if (this.values.length < 2) return;
    const step = (width - pad.left - pad.right) / (this.capacity - 1);
    const start = this.capacity - this.values.length;
    ctx.strokeStyle = "#2457c5";
    ctx.lineWidth = 2;
    ctx.beginPath();
    this.values.forEach((value, i) => {
      const x = pad.left + (start + i) * step;
      const y = pad.top + (height - pad.top - pad.bottom) * (1 - value / top);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}
